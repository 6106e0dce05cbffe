//! jwksd: the custodian of the signing keys of SMART on FHIR backend integrations.
//!
//! It generates key pairs, keeps the private halves sealed in a durable store, publishes
//! the public halves as JWKS documents that EHRs fetch, and rotates keys so that a
//! successor is always published before it signs.
//!
//! The architecture, by module, from the bottom layer up (each imports only from layers
//! below it; the README's "Layout" draws them):
//!
//! - [`keys`]: key material (aws-lc-rs), the [`keys::Signer`], JWKs and thumbprints,
//!   certificates, sealing at rest.
//! - [`vendor`]: what jwksd knows about each EHR (hosts, algorithms, pitfalls), for
//!   `doctor`, `register` and the classification of failed token requests.
//! - [`api`]: the wire types of every route (requests, answers, problem+json), shared by the
//!   handlers, the command-line clients and the tests.
//! - [`ratelimit`]: per-caller token buckets.
//! - [`logging`]: the log subscriber; the HTTP parser's per-request errors are counted and
//!   summarised instead of logged one by one.
//! - [`metrics`]: counters with labels, histograms and the Prometheus text writer, bumped
//!   by every layer and rendered by `http::metrics`.
//! - [`rotation`]: the lifecycle as pure functions of (keys, now, policy).
//! - [`audit`]: audit records and their hash chain, pure (no store).
//! - [`config`]: layered configuration (defaults, TOML, `JWKSD_` environment), validated once.
//! - [`assertion`]: RFC 7523 client assertions: claims, compact JWS, the record each leaves.
//! - [`store`]: the storage trait and its SQLite backend; the only code that speaks SQL.
//! - [`trail`]: the durable audit trail over a store: group-commit writer, verification
//!   against the sealed head.
//! - [`fetchers`]: who fetches each key set's JWKS (user agent, source network, kids
//!   served), accumulated in memory and written to the store in batches; the evidence a
//!   gated rotation waits for.
//! - [`error`]: the domain error of key operations, mapped to HTTP once in `http::problem`.
//! - [`keyring`]: start-up integrity checks, the in-memory snapshot readers use, and the
//!   one writer that applies lifecycle decisions to the store.
//! - [`signing`]: the signing service: the rules of an assertion (who may sign for which
//!   client, audience, lifetime, which key) and its audit record before the answer; used by
//!   `POST /v1/assertions` and the token exchange alike.
//! - [`tokens`]: token exchange with caching, SMART discovery, failure classification.
//! - [`tls`]: HTTPS on either listener from certificate and key files, re-read while
//!   serving; how the CLI trusts the listener its configuration names.
//! - [`http`]: the public listener (JWKS, certificates, health) and the private one (admin,
//!   signing, tokens, metrics): thin handlers over shared auth, body, problem and state.
//! - [`app`]: wires all of the above; `main` and the tests start the service through it.
//! - [`cli`]: the command line and the client code: one admin client that follows the
//!   server's configuration, and `keys`, `token`, `doctor`, `register`, `healthcheck`
//!   beside it. The only user of `anyhow` besides `main`.

pub mod api;
pub mod app;
pub mod assertion;
pub mod audit;
pub mod cli;
pub mod config;
pub mod error;
pub mod fetchers;
pub mod http;
pub mod keyring;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod rotation;
pub mod signing;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod trail;
pub mod vendor;

/// The wall clock in whole seconds since the Unix epoch. Only the edges (HTTP handlers, the
/// scheduler loop) read it; the lifecycle logic takes `now` as a parameter.
pub fn unix_now() -> rotation::UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `t` (seconds since the Unix epoch) as an RFC 3339 time in UTC, as every answer shows a
/// time; `None` for a time outside what RFC 3339 can write.
pub fn rfc3339(t: rotation::UnixTime) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// A source of "now", so that time-dependent behaviour (token caching) can be tested
/// without sleeping.
pub type Clock = std::sync::Arc<dyn Fn() -> rotation::UnixTime + Send + Sync>;

/// The wall clock as a [`Clock`].
pub fn system_clock() -> Clock {
    std::sync::Arc::new(unix_now)
}

/// A fresh 256-bit random token, base64url without padding (43 characters).
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())
        .unwrap_or_else(|_| unreachable!("the system random generator failed"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref())
}
