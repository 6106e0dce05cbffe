//! Durable storage of keys and store metadata, behind one small trait.
//!
//! The store is the source of truth: the keyring writes a whole lifecycle change with one
//! [`Store::apply`] (one transaction), then reloads what the store holds. Every transition
//! names the state it expects to find, so two writers racing on the same key set (replicas,
//! later) make one of them fail with [`StoreError::Conflict`] instead of both succeeding.
//!
//! Backends: [`sqlite`] (embedded, the default). The trait leaves room for PostgreSQL.

pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

use crate::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::keys::Algorithm;
use crate::rotation::{KeyRecord, KeyState, UnixTime};

/// A boxed future, so that `dyn Store` works without a macro crate.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A key as stored: its public record, public parameters, certificate and the sealed
/// private half (`None` once destroyed at retirement or revocation).
#[derive(Clone)]
pub struct StoredKey {
    pub record: KeyRecord,
    /// The public JWK parameters as JSON (see `PublicJwk::to_stored_json`).
    pub public_jwk: String,
    pub cert_der: Vec<u8>,
    pub sealed_private: Option<Vec<u8>>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("record", &self.record)
            .field(
                "sealed_private",
                &self.sealed_private.as_ref().map(|_| "[sealed]"),
            )
            .finish_non_exhaustive()
    }
}

/// A key moving from one state to another.
#[derive(Clone, Debug)]
pub struct Transition {
    pub kid: String,
    /// The state the key must be in; otherwise the whole change is refused.
    pub from: KeyState,
    pub to: KeyState,
    pub at: UnixTime,
    /// Set when retiring: when the public half leaves the JWKS.
    pub remove_at: Option<UnixTime>,
}

/// Everything one lifecycle operation writes, applied atomically: key rows and the audit
/// records that describe them.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub inserts: Vec<StoredKey>,
    pub transitions: Vec<Transition>,
    pub events: Vec<AuditEvent>,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A transition did not find the key in the state it expected: someone else changed
    /// the key set first. Nothing was written.
    #[error("the key set changed concurrently: {0}")]
    Conflict(String),
    /// The stored data is not what jwksd wrote (bad state name, unknown algorithm, ...).
    #[error("the store holds data jwksd cannot read: {0}")]
    Corrupt(String),
    /// The database itself failed (I/O, a full disk, locking, corruption detected by the
    /// engine). Nothing was written; usually transient.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The store cannot commit right now (a readiness probe failed a moment ago).
    #[error("the store cannot commit: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// A failure of the storage itself (answered 503, retry later), as opposed to a
    /// concurrent change or data jwksd cannot read.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Unavailable(_))
    }
}

/// The operations jwksd needs from a database.
pub trait Store: Send + Sync {
    /// Every key ever made, in creation order.
    fn load_keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;

    /// Applies `change` in one transaction; on any error nothing is written. Private
    /// halves of keys moving to `retired`, `removed` or `revoked` are erased in the same
    /// transaction.
    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()>;

    /// Appends `events` to the audit chain in one transaction (one disk sync) and returns
    /// their sequence numbers. Either all are durable or none.
    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> StoreFuture<'a, Vec<i64>>;

    /// Audit records with `seq > after` that match `filter`, oldest first, at most `limit`.
    fn audit_page<'a>(
        &'a self,
        filter: &'a AuditFilter,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<AuditRecord>>;

    /// Reads a metadata value.
    fn meta<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Writes a metadata value.
    fn set_meta<'a>(&'a self, name: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()>;

    /// Whether the store can commit a write now, for readiness checks. A write, not only a
    /// read: a full disk still answers reads. Backends may reuse an outcome younger than a
    /// second, so that frequent checks cost at most one disk sync a second.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Closes all connections once in-flight work is done (at shutdown). Later calls fail.
    fn close(&self) -> StoreFuture<'_, ()>;
}

pub(crate) fn parse_state(text: &str) -> Result<KeyState, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

pub(crate) fn parse_alg(text: &str) -> Result<Algorithm, StoreError> {
    text.parse()
        .map_err(|e: crate::keys::alg::UnknownAlgorithm| StoreError::Corrupt(e.to_string()))
}
