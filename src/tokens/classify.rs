//! Turning a failed token request into plain words: which of the usual causes it is, and
//! what to do about it.
//!
//! Vendors answer almost every authentication problem with `invalid_client` (HTTP 400 or
//! 401), so the class is inferred from the status, the OAuth `error`, the vendor's
//! `error_description`, and what jwksd knows itself: how long the signing kid has been
//! published. The vendors' wording and error codes come from [`crate::vendor`]. Pure
//! functions, tested with invented answers.

use crate::api::FailureClass;

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
        }
    }
}

/// How long after publication a kid may still be missing from an EHR's cached JWKS:
/// the JWKS `max-age` plus five minutes of slack for clocks and fetch schedules.
pub fn still_propagating(kid_published_for: i64, jwks_max_age: i64) -> bool {
    kid_published_for < jwks_max_age + 300
}

/// Classifies a failed token request. `status` is `None` when no HTTP answer came.
pub fn classify(
    status: Option<u16>,
    error: Option<&str>,
    description: Option<&str>,
    kid_published_for: Option<i64>,
    jwks_max_age: i64,
) -> FailureClass {
    let Some(status) = status else {
        return FailureClass::Unreachable;
    };
    let error = error.unwrap_or_default();
    if status == 429 || crate::vendor::RATE_LIMIT_ERRORS.contains(&error) {
        return FailureClass::RateLimited;
    }
    if status >= 500 || matches!(error, "server_error" | "temporarily_unavailable") {
        return FailureClass::ServerError;
    }
    if error == "invalid_scope" {
        return FailureClass::InvalidScope;
    }
    if matches!(error, "invalid_client" | "unauthorized_client") || status == 401 {
        if crate::vendor::says_unknown_client(description.unwrap_or_default()) {
            return FailureClass::UnknownClient;
        }
        if kid_published_for.is_some_and(|age| still_propagating(age, jwks_max_age)) {
            return FailureClass::KidNotYetSeen;
        }
        return FailureClass::KeyNotRegistered;
    }
    FailureClass::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    const HOUR: i64 = 3600;

    #[test]
    fn each_class_is_recognised() {
        assert_eq!(classify(None, None, None, None, HOUR), Unreachable);
        assert_eq!(classify(Some(429), None, None, None, HOUR), RateLimited);
        assert_eq!(
            classify(Some(400), Some("slow_down"), None, None, HOUR),
            RateLimited
        );
        assert_eq!(classify(Some(503), None, None, None, HOUR), ServerError);
        assert_eq!(
            classify(
                Some(400),
                Some("invalid_scope"),
                None,
                Some(10 * HOUR),
                HOUR
            ),
            InvalidScope
        );
        assert_eq!(
            classify(
                Some(401),
                Some("invalid_client"),
                Some("Client not found"),
                Some(10),
                HOUR
            ),
            UnknownClient,
            "the vendor's words win over the kid's age"
        );
        assert_eq!(
            classify(Some(401), Some("invalid_client"), None, Some(600), HOUR),
            KidNotYetSeen
        );
        assert_eq!(
            classify(
                Some(400),
                Some("invalid_client"),
                None,
                Some(2 * HOUR),
                HOUR
            ),
            KeyNotRegistered
        );
        assert_eq!(
            classify(Some(401), None, None, None, HOUR),
            KeyNotRegistered
        );
        assert_eq!(
            classify(Some(400), Some("invalid_grant"), None, None, HOUR),
            Other
        );
    }

    #[test]
    fn every_class_has_words_and_a_fix() {
        for class in [
            UnknownClient,
            KeyNotRegistered,
            KidNotYetSeen,
            InvalidScope,
            RateLimited,
            ServerError,
            Unreachable,
            Other,
        ] {
            assert!(!class.explanation().is_empty() && !class.fix().is_empty());
        }
    }
}
