//! `POST /v1/tokens` (private listener, callers), the admin's token check
//! (`POST /admin/v1/clients/{client}/token-check`), and what both say about a token
//! request: its [`Diagnosis`] and, when it failed, its [`FailureClass`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a caller asks for: a token for one of the clients it may use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The client's `client_id`, or the name of its `[clients.NAME]` section.
    pub client_id: String,
    /// Space-separated scopes; default: the client's `scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The token endpoint's answer (RFC 6749 §5.1), passed through: the members jwksd reads
/// are typed, every other member the endpoint sent is kept in `other`, unchanged. When the
/// answer comes from the cache, `expires_in` counts down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Any other member, and a member above whose value is not of the type shown (a
    /// vendor's `"expires_in": "3600"`), exactly as the endpoint sent it.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl TokenResponse {
    /// Types the members of a token endpoint's JSON object; `None` without a string
    /// `access_token`. Nothing is lost: a member of an unexpected type stays in `other`.
    pub fn from_object(mut object: Map<String, Value>) -> Option<Self> {
        let access_token = match object.remove("access_token") {
            Some(Value::String(token)) => token,
            _ => return None,
        };
        let mut take_string = |key: &str| match object.get(key) {
            Some(Value::String(_)) => match object.remove(key) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        };
        let token_type = take_string("token_type");
        let scope = take_string("scope");
        let expires_in = match object.get("expires_in").and_then(Value::as_i64) {
            Some(seconds) => {
                object.remove("expires_in");
                Some(seconds)
            }
            None => None,
        };
        Some(TokenResponse {
            access_token,
            token_type,
            expires_in,
            scope,
            other: object,
        })
    }
    /// The member `name` exactly as the endpoint sent it, typed or not (a string
    /// `expires_in` stays a string); `None` when it sent none.
    pub fn member(&self, name: &str) -> Option<Value> {
        match name {
            "access_token" => Some(Value::String(self.access_token.clone())),
            "token_type" if self.token_type.is_some() => self.token_type.clone().map(Value::from),
            "expires_in" if self.expires_in.is_some() => self.expires_in.map(Value::from),
            "scope" if self.scope.is_some() => self.scope.clone().map(Value::from),
            _ => self.other.get(name).cloned(),
        }
    }
}

/// The body of a token check (never a token: only whether one was obtained). A check that
/// reached the token endpoint answers 200 either way; anything else is a problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenCheck {
    /// `"ok": false`. Listed first: its `classification` is required, so a passed check
    /// never decodes as a failed one.
    Failed(TokenCheckFailed),
    /// `"ok": true`.
    Passed(TokenCheckPassed),
}

impl TokenCheck {
    pub fn ok(&self) -> bool {
        matches!(self, TokenCheck::Passed(_))
    }

    pub fn diagnosis(&self) -> &Diagnosis {
        match self {
            TokenCheck::Failed(f) => &f.diagnosis,
            TokenCheck::Passed(p) => &p.diagnosis,
        }
    }
}

/// The token endpoint issued a token (not shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCheckPassed {
    /// Always `true`.
    pub ok: bool,
    /// `token_type`, `expires_in` and `scope` of the token endpoint's answer, each as the
    /// endpoint sent it (a vendor's `"expires_in": "3600"` is echoed as that string);
    /// `null` when it sent none.
    pub token_type: Option<Value>,
    pub expires_in: Option<Value>,
    pub scope: Option<Value>,
    pub diagnosis: Diagnosis,
}

/// The token endpoint refused, or could not be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCheckFailed {
    /// Always `false`.
    pub ok: bool,
    pub classification: FailureClass,
    /// One sentence saying what went wrong.
    pub explanation: String,
    /// What the operator should do.
    pub fix: String,
    /// `None` when no HTTP answer came.
    pub upstream_status: Option<u16>,
    /// The OAuth error members of the answer (RFC 6749 §5.2).
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub error_uri: Option<String>,
    pub diagnosis: Diagnosis,
}

/// What jwksd knows about a token request, for the caller and the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub token_endpoint: String,
    pub kid: Option<String>,
    /// How long the signing kid had been published when the request was made.
    pub kid_published_for_seconds: Option<i64>,
    pub audience: String,
    pub scope: String,
    pub attempts: u32,
    /// Upstream `Date` minus local time, when the answer had a `Date` header.
    pub clock_skew_seconds: Option<i64>,
    /// Whether the signing kid joined a key set that already had published keys (a
    /// rotation or a revocation made it), so that an EHR may hold a JWKS from before it.
    /// `false` for a key set's first keys, which were never served without each other;
    /// `null` when no kid signed.
    #[serde(default)]
    pub kid_from_rotation: Option<bool>,
    /// Whether this jwksd has obtained a token for this client_id from this token endpoint
    /// since it started, and with which key; `null` when not asked (a cached answer).
    #[serde(default)]
    pub earlier_tokens: Option<EarlierTokens>,
    /// Whether the EHR fetched the key set's JWKS since the signing kid was published, from
    /// the record of JWKS fetches; `null` when there is no such record.
    #[serde(default)]
    pub jwks_fetched: Option<JwksFetched>,
    /// When a refusal's evidence fits several causes (`classification` is
    /// `undetermined`): each of them, most likely first, with the check that tells it
    /// apart. Empty otherwise, and then left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub possible_causes: Vec<PossibleCause>,
}

/// Tokens this jwksd obtained earlier for one client_id at one token endpoint. Kept in
/// memory (see `tokens`): a restart forgets them, and each replica knows its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlierTokens {
    /// None since this jwksd started.
    None,
    /// At least one, each signed by another key than the one that signed this request.
    WithAnotherKey,
    /// At least one signed by this very key.
    WithThisKey,
}

/// What the record of JWKS fetches says about the EHR and the signing kid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksFetched {
    /// The EHR never fetched the key set's JWKS.
    Never,
    /// Only before the signing kid was published: its copy lacks the kid.
    BeforeKid,
    /// Since the signing kid was published: its copy holds the kid.
    SinceKid,
}

/// One cause a refusal may have, with the check that confirms or rules it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PossibleCause {
    /// The class this cause would have, were it the only one.
    pub cause: FailureClass,
    /// The cause in a few words.
    pub explanation: String,
    /// How the operator finds out whether it is this one.
    pub check: String,
}

/// The usual reasons a backend token request fails (see `tokens::classify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The EHR does not know this client_id.
    UnknownClient,
    /// The client is known but the key (or the JWKS URL) is not registered or allow-listed.
    KeyNotRegistered,
    /// The signing kid is so new that the EHR may still hold a cached JWKS without it.
    KidNotYetSeen,
    /// The scope asked for is not granted to this client.
    InvalidScope,
    /// The EHR's rate limit was hit.
    RateLimited,
    /// The EHR failed (5xx).
    ServerError,
    /// The token endpoint could not be reached or did not answer in time.
    Unreachable,
    /// Anything else; the upstream error says more.
    Other,
    /// The EHR refused the client's authentication and the evidence fits more than one
    /// cause: `diagnosis.possible_causes` lists them, most likely first.
    Undetermined,
}

/// Body of a token check: optionally a scope other than the client's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCheckRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_answer_keeps_every_member_it_does_not_type() {
        let sent = serde_json::json!({
            "access_token": "t", "token_type": "Bearer", "expires_in": "3600",
            "scope": "system/Patient.read", "patient": 7
        });
        let Value::Object(object) = sent.clone() else {
            unreachable!()
        };
        let typed = TokenResponse::from_object(object).unwrap();
        assert_eq!(typed.expires_in, None, "a string expires_in stays as sent");
        assert_eq!(serde_json::to_value(&typed).unwrap(), sent);
        assert!(TokenResponse::from_object(Map::new()).is_none());
    }

    #[test]
    fn a_member_reads_as_the_endpoint_sent_it_typed_or_not() {
        let sent = serde_json::json!({
            "access_token": "t", "token_type": "Bearer", "expires_in": "3600", "patient": 7
        });
        let Value::Object(object) = sent else {
            unreachable!()
        };
        let typed = TokenResponse::from_object(object).unwrap();
        assert_eq!(typed.member("expires_in"), Some(Value::from("3600")));
        assert_eq!(typed.member("token_type"), Some(Value::from("Bearer")));
        assert_eq!(typed.member("patient"), Some(Value::from(7)));
        assert_eq!(typed.member("scope"), None);
        let Value::Object(object) = serde_json::json!({ "access_token": "t", "expires_in": 300 })
        else {
            unreachable!()
        };
        let typed = TokenResponse::from_object(object).unwrap();
        assert_eq!(typed.expires_in, Some(300));
        assert_eq!(typed.member("expires_in"), Some(Value::from(300)));
    }

    /// The token check echoes `token_type`, `expires_in` and `scope` as sent: a string
    /// `expires_in` is that string on the wire, not `null`.
    #[test]
    fn a_passed_check_carries_a_string_expires_in_as_sent() {
        let passed = TokenCheckPassed {
            ok: true,
            token_type: Some(Value::from("bearer")),
            expires_in: Some(Value::from("3600")),
            scope: None,
            diagnosis: Diagnosis::default(),
        };
        let wire = serde_json::to_value(TokenCheck::Passed(passed.clone())).unwrap();
        assert_eq!(wire["expires_in"], Value::from("3600"));
        assert_eq!(wire["token_type"], Value::from("bearer"));
        assert_eq!(wire["scope"], Value::Null);
        let read: TokenCheck = serde_json::from_value(wire).unwrap();
        assert_eq!(read, TokenCheck::Passed(passed));
    }

    #[test]
    fn a_passed_check_never_decodes_as_a_failed_one() {
        let passed = TokenCheck::Passed(TokenCheckPassed {
            ok: true,
            token_type: Some("Bearer".into()),
            expires_in: Some(300.into()),
            scope: None,
            diagnosis: Diagnosis::default(),
        });
        let failed = TokenCheck::Failed(TokenCheckFailed {
            ok: false,
            classification: FailureClass::KidNotYetSeen,
            explanation: "e".into(),
            fix: "f".into(),
            upstream_status: Some(401),
            error: Some("invalid_client".into()),
            error_description: None,
            error_uri: None,
            diagnosis: Diagnosis::default(),
        });
        for check in [passed, failed] {
            let text = serde_json::to_string(&check).unwrap();
            assert_eq!(serde_json::from_str::<TokenCheck>(&text).unwrap(), check);
        }
    }
}
