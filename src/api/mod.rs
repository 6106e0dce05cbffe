//! The wire types of jwksd's HTTP API: one request or response struct per route of both
//! listeners, and the problem+json body every refusal takes.
//!
//! The handlers in `http` serialise these, and the command-line clients and the tests
//! decode them, so a renamed or retyped member breaks the build instead of a user. Each
//! type derives both `Serialize` and `Deserialize`. Member names and JSON shapes are the
//! published ones (the README's "HTTP" section): `Option` members that are sent as `null` carry no
//! `skip_serializing_if`; those that are left out when absent do.
//!
//! This module depends on serde alone (`serde_json::Value` only where a member is free-form
//! JSON: an audit record's `detail`, a token endpoint's extra members and the members a
//! token check echoes as sent), so both sides of the wire can use it without pulling in
//! the server.
//!
//! Which types live here: a value that goes on the wire exactly as a service computes it
//! (a failed token request's `Diagnosis` and `FailureClass`, a token endpoint's answer, an
//! assertion request) is defined here once and used by the service directly; a domain type
//! with rules of its own (`rotation::KeyState`, the keyring's records) stays in its module,
//! and the handler maps it to its wire twin here.

pub mod admin;
pub mod health;
pub mod problem;
pub mod signing;
pub mod tokens;

pub use admin::{
    AuditEntry, AuditPage, AuditQuery, ClientInfo, ClientList, Jwk, Jwks, KeyInfo, KeyList,
    KeyState, KeysetInfo, KeysetList, Revocation, RevokeRequest, RotateQuery, RotateRequest,
    Rotation,
};
pub use admin::{FetcherInfo, FetcherList, GateState, RotationGate, Schedule, ServedKidInfo};
pub use health::Health;
pub use problem::{Problem, UpstreamFailure, PROBLEM_TYPE_PREFIX};
pub use signing::{AssertionRequest, AssertionResponse};
pub use tokens::{
    Diagnosis, EarlierTokens, FailureClass, JwksFetched, PossibleCause, TokenCheck,
    TokenCheckFailed, TokenCheckPassed, TokenCheckRequest, TokenRequest, TokenResponse,
};
