//! `POST /v1/assertions` (private listener, callers).

use serde::{Deserialize, Serialize};

/// What a caller asks for: an assertion for one of the clients it may sign for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionRequest {
    /// The client's `client_id`, or the name of its `[clients.NAME]` section.
    pub client_id: String,
    /// One of the client's audiences; default: its first (or its token endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Seconds until `exp`; default: the client's `assertion_lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<i64>,
}

/// A signed client assertion (RFC 7523), ready to put in a token request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionResponse {
    /// The compact JWS.
    pub client_assertion: String,
    /// Always `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (RFC 7523 §2.2).
    pub client_assertion_type: String,
    pub kid: String,
    pub alg: String,
    pub jti: String,
    /// `exp` as RFC 3339.
    pub expires_at: Option<String>,
}
