//! The problem details body (RFC 9457) of every refusal, on both listeners, with the
//! extension members jwksd adds (RFC 9457 §3.2).
//!
//! Which `type`, `status`, `title` and `Retry-After` a refusal has is decided in one place,
//! `http::problem`; this is only the shape.

use serde::{Deserialize, Serialize};

use super::tokens::{Diagnosis, FailureClass};

/// Every jwksd problem `type` is this prefix followed by a slug (`urn:jwksd:problem:not-found`).
pub const PROBLEM_TYPE_PREFIX: &str = "urn:jwksd:problem:";

/// An `application/problem+json` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:jwksd:problem:<slug>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// For the operator; never internal error text.
    pub detail: String,
    /// Seconds to wait, also sent as the `Retry-After` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
    /// Set on internal failures: the id of the server log line (logged at ERROR) that has
    /// the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    /// The id of the request this answers, also in the `X-Request-Id` header and on the
    /// request's log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Set when a token endpoint refused (`upstream-refused`).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamFailure>,
}

impl Problem {
    /// The slug of `type`, without [`PROBLEM_TYPE_PREFIX`].
    pub fn slug(&self) -> &str {
        self.problem_type
            .strip_prefix(PROBLEM_TYPE_PREFIX)
            .unwrap_or(&self.problem_type)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

/// What a token endpoint answered to a refused token request, and jwksd's reading of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamFailure {
    pub classification: FailureClass,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_decodes_with_and_without_its_upstream_members() {
        let plain = r#"{"type":"urn:jwksd:problem:not-found","title":"Not Found","status":404,"detail":"d"}"#;
        let problem: Problem = serde_json::from_str(plain).unwrap();
        assert_eq!(problem.slug(), "not-found");
        assert_eq!(problem.upstream, None);
        assert_eq!(serde_json::to_string(&problem).unwrap(), plain);

        let refused = serde_json::json!({
            "type": "urn:jwksd:problem:upstream-refused", "title": "Token Request Failed",
            "status": 502, "detail": "d", "retry_after": 3,
            "classification": "rate_limited", "fix": "f", "upstream_status": 429,
            "error": null, "error_description": null, "error_uri": null,
            "diagnosis": serde_json::to_value(Diagnosis::default()).unwrap(),
        });
        let problem: Problem = serde_json::from_value(refused.clone()).unwrap();
        let upstream = problem.upstream.as_ref().unwrap();
        assert_eq!(upstream.classification, FailureClass::RateLimited);
        assert_eq!(serde_json::to_value(&problem).unwrap(), refused);
    }
}
