//! The domain error: what can go wrong in a key operation, without HTTP.
//!
//! `http::problem` maps each variant to a status and a fixed problem+json body once; the
//! CLI prints the cause chain. Variants carry what the operator needs to act (which kid,
//! how long to wait), never key material.

use crate::keys::cert::CertError;
use crate::keys::KeyError;
use crate::logging::HumanSeconds;
use crate::rotation::KeyState;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key set of that name is configured.
    #[error("no key set named {0:?} is configured")]
    UnknownKeyset(String),
    /// No key with that kid exists in any configured key set.
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    /// Rotation refused: the successor has not been published long enough.
    #[error(
        "next key {next_kid} has been published for {}; it must be published for {} \
         (prepublish) before it signs, so that every verifier's cached JWKS has it. Retry in {}, \
         or force it (--force, ?force=true) if you accept that some verifiers may reject \
         assertions until their cache expires",
        HumanSeconds(*.published_for),
        HumanSeconds(*.prepublish),
        HumanSeconds(*.retry_after)
    )]
    RotationTooEarly {
        keyset: String,
        next_kid: String,
        published_for: i64,
        prepublish: i64,
        retry_after: i64,
    },
    /// Rotation refused (`rotation_requires_fetch`): recent fetchers of the JWKS have not
    /// been served the successor at least `jwks_max_age` ago.
    #[error(
        "next key {next_kid} has not been served to every recent fetcher of the JWKS at least \
         {jwks_max_age}s ago (rotation_requires_fetch is on); waiting for: {}. Retry once they \
         have fetched it, or force it (--force, ?force=true) if you accept that their token \
         requests may fail until they refetch",
        unseen.join("; ")
    )]
    NextKeyNotFetched {
        keyset: String,
        next_kid: String,
        /// The fetchers, as operators know them (user agent and network).
        unseen: Vec<String>,
        jwks_max_age: i64,
        retry_after: Option<i64>,
    },
    /// Rotation refused: there is no published successor yet.
    #[error("key set {0:?} has no published next key yet; retry in a minute")]
    NoNextKey(String),
    /// The key is already out of the JWKS.
    #[error("key {kid} is already {state}; only published keys can be revoked")]
    NotRevocable { kid: String, state: KeyState },
    /// The stored keys failed an integrity check: the wrong master key, or an edited row.
    #[error("{0}")]
    Integrity(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A blocking task (key generation) panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(String),
}
