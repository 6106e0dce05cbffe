//! Turning a failed token request into plain words: which of the usual causes it is, and
//! what to do about it, stated only as far as the evidence goes.
//!
//! Vendors answer almost every authentication problem with `invalid_client` (HTTP 400 or
//! 401), and node-oidc-provider, like many servers, says only "client authentication
//! failed" whether the client_id is unknown, the JWKS URL unregistered, or its cached JWKS
//! older than the kid. So the class is inferred from all the evidence at hand
//! ([`Evidence`]): the status, the OAuth `error`, the vendor's `error_description` (its
//! wording comes from [`crate::vendor`]), how long the signing kid has been published and
//! whether it joined a key set that already had keys (a key set's first keys were never
//! served without each other, so no EHR holds a copy that lacks them), whether a token was
//! obtained earlier for this client, and, where a record of JWKS fetches exists, whether
//! the EHR fetched the JWKS since the kid was published. When the evidence fits several
//! causes the class is [`FailureClass::Undetermined`] and the causes are listed, most
//! likely first, each with its check. Pure functions, tested with invented answers.

use crate::api::{EarlierTokens, FailureClass, JwksFetched, PossibleCause};

/// The words and fixes of each usual reason a backend token request fails (the class is a
/// wire type, [`crate::api::FailureClass`], since it is reported as it is).
impl FailureClass {
    /// One sentence saying what went wrong.
    pub fn explanation(self) -> &'static str {
        match self {
            FailureClass::UnknownClient => "the EHR does not recognise this client_id",
            FailureClass::KeyNotRegistered => {
                "the EHR knows the client but does not accept its key: the JWKS URL (or the key) is not registered, or not allow-listed yet"
            }
            FailureClass::KidNotYetSeen => {
                "the assertion was signed with a key the EHR has probably not fetched yet: it was published only recently and the EHR may still be using a cached JWKS"
            }
            FailureClass::InvalidScope => "the EHR does not grant the requested scope to this client",
            FailureClass::RateLimited => "the EHR's rate limit for this client or practice was reached",
            FailureClass::ServerError => "the EHR's token endpoint failed",
            FailureClass::Unreachable => "the token endpoint could not be reached or did not answer in time",
            FailureClass::Other => "the EHR refused the token request",
            FailureClass::Undetermined => {
                "the EHR refused the client's authentication, and the evidence fits more than one cause (see possible_causes, most likely first)"
            }
        }
    }

    /// The class as one cause among several, in a few words.
    pub fn as_cause(self) -> &'static str {
        match self {
            FailureClass::UnknownClient => "unknown client_id or app not enabled for this practice",
            FailureClass::KeyNotRegistered => "JWKS URL not registered or not allow-listed",
            FailureClass::KidNotYetSeen => "EHR cache older than the kid",
            other => other.explanation(),
        }
    }

    /// How the operator confirms or rules out this cause.
    pub fn check(self) -> &'static str {
        match self {
            FailureClass::UnknownClient => {
                "compare client_id with the one the vendor portal shows for this app, and check that the app is enabled for this customer or practice"
            }
            FailureClass::KeyNotRegistered => {
                "check that the vendor portal lists exactly this client's JWKS URL (`jwksd register` prints it) and, for eClinicalWorks, that their support has allow-listed it; an EHR that never fetches the JWKS does not have the URL"
            }
            FailureClass::KidNotYetSeen => {
                "the signing kid was published less than jwks_max_age + 5 minutes ago: if a token request after the EHR's cache expires (at most jwks_max_age) works, this was it"
            }
            other => other.fix(),
        }
    }

    /// What the operator should do.
    pub fn fix(self) -> &'static str {
        match self {
            FailureClass::UnknownClient => {
                "check client_id against the vendor portal, and that the app is enabled for this customer/practice"
            }
            FailureClass::KeyNotRegistered => {
                "register the JWKS URL (or upload the current and next keys) in the vendor portal; for eClinicalWorks ask their support to allow-list the JWKS URL; `jwksd register` prints what to send"
            }
            FailureClass::KidNotYetSeen => {
                "wait until the EHR's JWKS cache expires (at most jwks_max_age), and rotate without --force next time so the next key is published for prepublish first"
            }
            FailureClass::InvalidScope => {
                "ask only for system/ scopes enabled for the app in the vendor portal, spelled as the EHR expects (v1 system/Patient.read or v2 system/Patient.rs)"
            }
            FailureClass::RateLimited => {
                "let callers use POST /v1/tokens (tokens are cached) instead of asking for a token per FHIR call, and retry after the Retry-After delay"
            }
            FailureClass::ServerError => "retry later; if it persists, contact the vendor",
            FailureClass::Unreachable => {
                "check the token endpoint URL, DNS, the egress firewall and proxies from this host"
            }
            FailureClass::Other => "read error and error_description from the EHR",
            FailureClass::Undetermined => {
                "go through possible_causes in order and run the check of each; the first that fails is the one to fix"
            }
        }
    }
}

/// How long after publication a kid may still be missing from an EHR's cached JWKS:
/// the JWKS `max-age` plus five minutes of slack for clocks and fetch schedules.
pub fn still_propagating(kid_published_for: i64, jwks_max_age: i64) -> bool {
    kid_published_for < jwks_max_age + 300
}

/// Everything known about one failed token request.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    /// `None` when no HTTP answer came.
    pub status: Option<u16>,
    /// The OAuth `error` of the answer.
    pub error: Option<&'a str>,
    /// The answer's `error_description`.
    pub description: Option<&'a str>,
    /// How long the signing kid had been published.
    pub kid_published_for: Option<i64>,
    /// The key set's `jwks_max_age`, in seconds.
    pub jwks_max_age: i64,
    /// Whether the signing kid joined a key set that already had published keys.
    pub kid_from_rotation: bool,
    /// Tokens obtained earlier for this client_id at this token endpoint.
    pub earlier_tokens: EarlierTokens,
    /// What the record of JWKS fetches says; `None` where there is no record.
    pub jwks_fetched: Option<JwksFetched>,
}

/// The reading of a failed token request: its class and, when the class is
/// [`FailureClass::Undetermined`], the causes the evidence still allows, most likely first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub class: FailureClass,
    pub possible_causes: Vec<FailureClass>,
}

impl Classification {
    fn certain(class: FailureClass) -> Self {
        Classification {
            class,
            possible_causes: Vec::new(),
        }
    }

    /// The possible causes as they go on the wire, with their words and checks.
    pub fn causes_on_the_wire(&self) -> Vec<PossibleCause> {
        self.possible_causes
            .iter()
            .map(|&cause| PossibleCause {
                cause,
                explanation: cause.as_cause().to_owned(),
                check: cause.check().to_owned(),
            })
            .collect()
    }
}

/// Classifies a failed token request from all the evidence at hand.
pub fn classify(evidence: &Evidence<'_>) -> Classification {
    let Some(status) = evidence.status else {
        return Classification::certain(FailureClass::Unreachable);
    };
    let error = evidence.error.unwrap_or_default();
    if status == 429 || crate::vendor::RATE_LIMIT_ERRORS.contains(&error) {
        return Classification::certain(FailureClass::RateLimited);
    }
    if status >= 500 || matches!(error, "server_error" | "temporarily_unavailable") {
        return Classification::certain(FailureClass::ServerError);
    }
    if error == "invalid_scope" {
        return Classification::certain(FailureClass::InvalidScope);
    }
    if matches!(error, "invalid_client" | "unauthorized_client") || status == 401 {
        return authentication_failure(evidence);
    }
    Classification::certain(FailureClass::Other)
}

/// An `invalid_client`: the causes the evidence leaves, most likely first.
fn authentication_failure(evidence: &Evidence<'_>) -> Classification {
    use FailureClass::{KeyNotRegistered, KidNotYetSeen, UnknownClient};
    let description = evidence.description.unwrap_or_default();
    if crate::vendor::says_unknown_client(description) {
        return Classification::certain(UnknownClient);
    }
    let fetched = evidence.jwks_fetched;
    // An EHR can hold a JWKS without the kid only if one was served without it (never for
    // a key set's first keys), recently enough for its cache to be alive, and it fetched
    // the JWKS before the kid and not since; a kid that already obtained a token was seen.
    let stale_cache = evidence.kid_from_rotation
        && evidence
            .kid_published_for
            .is_some_and(|age| still_propagating(age, evidence.jwks_max_age))
        && !matches!(fetched, Some(JwksFetched::SinceKid | JwksFetched::Never))
        && evidence.earlier_tokens != EarlierTokens::WithThisKey;
    // The EHR fetches only a JWKS URL that is registered (and allow-listed).
    let jwks_known = matches!(
        fetched,
        Some(JwksFetched::SinceKid | JwksFetched::BeforeKid)
    );
    let mut causes = Vec::new();
    match evidence.earlier_tokens {
        // The client and its JWKS were accepted with an earlier key: the new key is what
        // the EHR lacks, in a stale cache or in a key set uploaded before it existed.
        EarlierTokens::WithAnotherKey => {
            causes.push(if stale_cache {
                KidNotYetSeen
            } else {
                KeyNotRegistered
            });
        }
        // This very key worked: the registration changed since (the JWKS URL removed, or
        // the app disabled for the practice).
        EarlierTokens::WithThisKey => causes.extend([KeyNotRegistered, UnknownClient]),
        EarlierTokens::None => {
            // A vendor that says a signature or key failed checked the client's keys: it
            // knows the client.
            let client_known = crate::vendor::says_key_rejected(description);
            if fetched == Some(JwksFetched::BeforeKid) && stale_cache {
                causes.push(KidNotYetSeen);
            }
            if fetched == Some(JwksFetched::Never) && evidence.kid_from_rotation {
                // Nobody fetched the JWKS through a whole rotation: the EHR has no URL for
                // it, first of all. For a key set's first keys an unknown client (which the
                // EHR never looks up keys for) stays the likelier first-day cause.
                causes.push(KeyNotRegistered);
            }
            if !client_known {
                causes.push(UnknownClient);
            }
            if !jwks_known && !causes.contains(&KeyNotRegistered) {
                causes.push(KeyNotRegistered);
            }
            if stale_cache && !causes.contains(&KidNotYetSeen) {
                causes.push(KidNotYetSeen);
            }
        }
    }
    match causes.as_slice() {
        [] => Classification::certain(FailureClass::Other),
        [only] => Classification::certain(*only),
        _ => Classification {
            class: FailureClass::Undetermined,
            possible_causes: causes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    const HOUR: i64 = 3600;

    /// A refusal with nothing known beyond the answer: a key set's first keys, published
    /// `kid_age` seconds ago, no earlier token, no record of JWKS fetches.
    fn refusal(
        status: u16,
        error: &'static str,
        description: &'static str,
        kid_age: i64,
    ) -> Evidence<'static> {
        Evidence {
            status: Some(status),
            error: Some(error).filter(|e| !e.is_empty()),
            description: Some(description).filter(|d| !d.is_empty()),
            kid_published_for: Some(kid_age),
            jwks_max_age: HOUR,
            kid_from_rotation: false,
            earlier_tokens: EarlierTokens::None,
            jwks_fetched: None,
        }
    }

    fn class_of(evidence: Evidence<'_>) -> FailureClass {
        classify(&evidence).class
    }

    fn causes_of(evidence: Evidence<'_>) -> Vec<FailureClass> {
        let read = classify(&evidence);
        assert_eq!(read.class, Undetermined, "{read:?}");
        read.possible_causes
    }

    #[test]
    fn each_class_that_the_answer_alone_decides_is_recognised() {
        let unreachable = Evidence {
            status: None,
            ..refusal(0, "", "", 10)
        };
        assert_eq!(class_of(unreachable), Unreachable);
        assert_eq!(class_of(refusal(429, "", "", 10)), RateLimited);
        assert_eq!(class_of(refusal(400, "slow_down", "", 10)), RateLimited);
        assert_eq!(class_of(refusal(503, "", "", 10)), ServerError);
        assert_eq!(
            class_of(refusal(400, "invalid_scope", "", 10 * HOUR)),
            InvalidScope
        );
        assert_eq!(class_of(refusal(400, "invalid_grant", "", 10)), Other);
    }

    /// The scripted vendor wordings: eClinicalWorks' "Client not found" and the others'
    /// unknown-client phrases decide at once, whatever the kid's age or history.
    #[test]
    fn a_vendor_that_says_the_client_is_unknown_is_believed() {
        for description in [
            "Client not found",
            "unknown client",
            "Invalid client_id",
            "client does not exist",
        ] {
            let young_rotated = Evidence {
                kid_from_rotation: true,
                ..refusal(401, "invalid_client", description, 10)
            };
            assert_eq!(class_of(young_rotated), UnknownClient, "{description}");
        }
    }

    #[test]
    fn a_vendor_that_says_the_signature_failed_knows_the_client() {
        let old = refusal(
            400,
            "invalid_client",
            "signature verification failed",
            2 * HOUR,
        );
        assert_eq!(class_of(old), KeyNotRegistered);
        let young_rotated = Evidence {
            kid_from_rotation: true,
            ..refusal(400, "invalid_client", "signature verification failed", 600)
        };
        assert_eq!(causes_of(young_rotated), [KeyNotRegistered, KidNotYetSeen]);
    }

    /// The case: node-oidc-provider says "client authentication failed" for an
    /// unknown client_id. On a brand-new key set (young first keys) that is never a stale
    /// cache, and never "the EHR knows the client", at any age.
    #[test]
    fn a_generic_refusal_on_a_new_key_set_names_both_first_day_causes_and_no_cache() {
        for age in [5, 600, 2 * HOUR] {
            assert_eq!(
                causes_of(refusal(
                    401,
                    "invalid_client",
                    "client authentication failed",
                    age
                )),
                [UnknownClient, KeyNotRegistered],
                "{age}"
            );
        }
        // No description at all, and no error member: the same.
        assert_eq!(
            causes_of(refusal(401, "", "", 600)),
            [UnknownClient, KeyNotRegistered]
        );
    }

    #[test]
    fn a_young_kid_from_a_rotation_adds_the_stale_cache_last_when_nothing_else_is_known() {
        let rotated = Evidence {
            kid_from_rotation: true,
            ..refusal(401, "invalid_client", "client authentication failed", 600)
        };
        assert_eq!(
            causes_of(rotated),
            [UnknownClient, KeyNotRegistered, KidNotYetSeen]
        );
        // Once the cache must have expired, it is not a cause any more.
        let settled = Evidence {
            kid_published_for: Some(HOUR + 301),
            ..rotated
        };
        assert_eq!(causes_of(settled), [UnknownClient, KeyNotRegistered]);
    }

    #[test]
    fn an_earlier_token_with_another_key_means_the_client_and_its_jwks_are_known() {
        let rotated = Evidence {
            kid_from_rotation: true,
            earlier_tokens: EarlierTokens::WithAnotherKey,
            ..refusal(401, "invalid_client", "client authentication failed", 600)
        };
        assert_eq!(class_of(rotated), KidNotYetSeen);
        // The kid is old enough for every cache to hold it: the EHR has a key set without
        // it (an upload not renewed after the rotation).
        let settled = Evidence {
            kid_published_for: Some(2 * HOUR),
            ..rotated
        };
        assert_eq!(class_of(settled), KeyNotRegistered);
        // A key set's first keys: the EHR's copy cannot predate them.
        let first = Evidence {
            kid_from_rotation: false,
            ..rotated
        };
        assert_eq!(class_of(first), KeyNotRegistered);
    }

    #[test]
    fn an_earlier_token_with_this_very_key_means_the_registration_changed() {
        let worked_before = Evidence {
            kid_from_rotation: true,
            earlier_tokens: EarlierTokens::WithThisKey,
            ..refusal(401, "invalid_client", "client authentication failed", 600)
        };
        assert_eq!(causes_of(worked_before), [KeyNotRegistered, UnknownClient]);
    }

    /// The seam for the record of JWKS fetches (the operations issue): where it exists it
    /// confirms or rules out the JWKS causes.
    #[test]
    fn the_record_of_jwks_fetches_confirms_or_rules_out_the_jwks_causes() {
        let rotated = Evidence {
            kid_from_rotation: true,
            ..refusal(401, "invalid_client", "client authentication failed", 600)
        };
        let never = Evidence {
            jwks_fetched: Some(JwksFetched::Never),
            ..rotated
        };
        assert_eq!(causes_of(never), [KeyNotRegistered, UnknownClient]);
        let never_on_first_keys = Evidence {
            jwks_fetched: Some(JwksFetched::Never),
            ..refusal(401, "invalid_client", "client authentication failed", 600)
        };
        assert_eq!(
            causes_of(never_on_first_keys),
            [UnknownClient, KeyNotRegistered]
        );
        let before = Evidence {
            jwks_fetched: Some(JwksFetched::BeforeKid),
            ..rotated
        };
        assert_eq!(causes_of(before), [KidNotYetSeen, UnknownClient]);
        let since = Evidence {
            jwks_fetched: Some(JwksFetched::SinceKid),
            ..rotated
        };
        assert_eq!(class_of(since), UnknownClient);
    }

    #[test]
    fn every_class_has_words_a_fix_and_a_check() {
        for class in [
            UnknownClient,
            KeyNotRegistered,
            KidNotYetSeen,
            InvalidScope,
            RateLimited,
            ServerError,
            Unreachable,
            Other,
            Undetermined,
        ] {
            assert!(!class.explanation().is_empty() && !class.fix().is_empty());
            assert!(!class.as_cause().is_empty() && !class.check().is_empty());
        }
        let wire = classify(&refusal(401, "invalid_client", "", 10)).causes_on_the_wire();
        assert_eq!(
            wire[0].explanation,
            "unknown client_id or app not enabled for this practice"
        );
        assert_eq!(
            wire[1].explanation,
            "JWKS URL not registered or not allow-listed"
        );
    }
}
