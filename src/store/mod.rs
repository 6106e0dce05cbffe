//! Durable storage of keys and store metadata, behind one small trait.
//!
//! The store is the source of truth: the keyring writes a whole lifecycle change with one
//! [`Store::apply`] (one transaction), then reloads what the store holds. Every transition
//! names the state it expects to find, so two writers racing on the same key set (replicas,
//! later) make one of them fail with [`StoreError::Conflict`] instead of both succeeding.
//!
//! Backends: [`sqlite`] (embedded, the default) and [`postgres`] (one database for one or
//! more jwksd processes). What they check and write the same way (row MACs, the store's
//! seal, the write connection, the readiness probe) is in [`integrity`], so a backend holds
//! only its SQL; `outage` is how the networked backend fails fast while its database is
//! down.

pub(crate) mod integrity;
pub mod metered;
mod outage;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

use crate::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::keys::Algorithm;
use crate::rotation::{KeyRecord, KeyState, UnixTime};
use base64::Engine;

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

impl Transition {
    /// The row as this transition leaves it: exactly what the backends write, so the MAC the
    /// store computes and the snapshot the keyring builds agree by construction.
    pub fn apply_to(&self, key: &mut StoredKey) {
        let r = &mut key.record;
        r.state = self.to;
        let stamp = Some(self.at);
        match self.to {
            KeyState::Next => r.published_at = self.at,
            KeyState::Current => r.activated_at = stamp,
            KeyState::Retired => r.retired_at = stamp,
            KeyState::Removed => r.removed_at = stamp,
            KeyState::Revoked => r.revoked_at = stamp,
        }
        if self.remove_at.is_some() {
            r.remove_at = self.remove_at;
        }
        if !matches!(self.to, KeyState::Next | KeyState::Current) {
            key.sealed_private = None;
        }
    }
}

/// The MAC domains: a tag made for one kind of record is never valid for another.
pub const KEY_ROW_MAC: &str = "jwksd/key-row/v1";
pub const STORE_SEAL_MAC: &str = "jwksd/store-seal/v1";

/// The bytes a key row's MAC covers: every column, in a fixed order, as a JSON array
/// (unambiguous: strings are quoted and escaped, absent values are `null`). The sealed
/// private half is covered by its presence only; its content is bound to the row by its
/// own AEAD associated data.
pub fn key_row_mac_input(key: &StoredKey) -> Vec<u8> {
    let r = &key.record;
    serde_json::json!([
        r.kid,
        r.keyset,
        r.alg.as_str(),
        r.state.as_str(),
        r.created_at,
        r.published_at,
        r.activated_at,
        r.retired_at,
        r.remove_at,
        r.removed_at,
        r.revoked_at,
        key.public_jwk,
        base64::engine::general_purpose::STANDARD.encode(&key.cert_der),
        key.sealed_private.is_some(),
    ])
    .to_string()
    .into_bytes()
}

/// The newest record of the audit chain, as the store recorded it apart from the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

/// What the store records about its whole contents, under one MAC, in the same transaction
/// as every write: the audit chain's newest record, and a digest of every key row's MAC.
/// A row MAC alone proves a row authentic, not current: an older copy of a row (a revoked
/// key from a backup, when it was still current), a deleted row, or a truncated or extended
/// audit tail each leave valid MACs behind, but never the sealed digest and head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSeal {
    pub head: AuditHead,
    pub keys_digest: String,
}

impl StoreSeal {
    /// The bytes the seal's MAC covers (also its stored form).
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{} {} {}", self.head.seq, self.head.hash, self.keys_digest).into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let seal = StoreSeal {
            head: AuditHead {
                seq: parts.next()?.parse().ok()?,
                hash: parts.next()?.to_owned(),
            },
            keys_digest: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(seal)
    }
}

/// The digest of a store's key rows: SHA-256 over each row's kid and MAC, in kid order.
pub fn keys_digest<'a>(rows: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (kid, mac) in rows {
        ctx.update(kid.as_bytes());
        ctx.update(b"\0");
        ctx.update(hex::encode(mac).as_bytes());
        ctx.update(b"\n");
    }
    hex::encode(ctx.finish().as_ref())
}

/// Everything one lifecycle operation writes, applied atomically: key rows and the audit
/// records that describe them.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub inserts: Vec<StoredKey>,
    pub transitions: Vec<Transition>,
    pub events: Vec<AuditEvent>,
}

/// One distinct fetcher of a key set's JWKS, as the fetcher record keeps it: no key
/// material, no MAC (it never decides what is published or signs; see `crate::fetchers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetcher {
    pub keyset: String,
    /// The `User-Agent` it sent, shortened (empty when it sent none).
    pub user_agent: String,
    /// Its source network: the IPv4 /24 or IPv6 /48 of its address (`203.0.113.0/24`).
    pub network: String,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    /// The kids it was served, oldest first.
    pub kids: Vec<ServedKid>,
}

/// A kid a fetcher was served: first and last time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedKid {
    pub kid: String,
    pub first_served: UnixTime,
    pub last_served: UnixTime,
}

/// What one batch of fetches did to the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchersWritten {
    /// Fetchers not recorded because their key set holds `cap` fetchers already.
    pub refused_at_cap: usize,
    /// Fetchers deleted because their last fetch is older than the retention.
    pub pruned: u64,
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
    /// A key row or the audit head does not carry a valid MAC under the master key: it was
    /// written by someone without the master key.
    #[error("{0}; the store was altered outside jwksd. Restore it from a backup")]
    Tampered(String),
    /// This handle was opened without the master key, so it can neither write nor
    /// authenticate key rows (`jwksd backup`).
    #[error("the store was opened without the master key")]
    Unauthenticated,
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
        match self {
            StoreError::Unavailable(_) => true,
            // What the engine, the disk or the pool said; not data that fails to decode
            // (that is tampering or a bug, and retrying will not help).
            StoreError::Database(e) => matches!(
                e,
                sqlx::Error::Database(_)
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Protocol(_)
            ),
            _ => false,
        }
    }
}

/// The operations jwksd needs from a database.
pub trait Store: Send + Sync {
    /// Every key ever made, ordered by creation time and then by kid (bytewise), so that
    /// every process on one store lists keys in one order; each verified against its MAC,
    /// and all of them together against the store's seal ([`StoreError::Tampered`] says
    /// what fails).
    fn load_keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;

    /// The audit chain's recorded head, from the store's seal (MAC verified); `None` when
    /// nothing was ever written.
    fn audit_head(&self) -> StoreFuture<'_, Option<AuditHead>>;

    /// Gives every key row a MAC and seals the store, and writes `master_check` under
    /// `check_name`, all in one transaction: the one-time upgrade of a store written before
    /// rows were authenticated. Refuses ([`StoreError::Tampered`]) a store that was already
    /// sealed or has a row with a MAC (an old master-key check put back), and a row whose kid
    /// is not in `generated` (the kids the audit trail says jwksd made). Returns how many
    /// rows it authenticated.
    fn authenticate_legacy_rows<'a>(
        &'a self,
        generated: &'a [String],
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, usize>;

    /// Starts a new store: writes `master_check` under `check_name` and the first seal (no
    /// keys, no audit records) in one transaction. From then on a missing seal is tampering.
    fn initialise<'a>(&'a self, check_name: &'a str, master_check: &'a [u8])
        -> StoreFuture<'a, ()>;

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

    /// Merges `batch` into the fetcher record in one transaction: a fetcher's first times
    /// only move earlier and its last times only later, so batches from several processes
    /// merge in any order. A fetcher new to its key set is not recorded when the key set
    /// already has `cap` fetchers (counted in the answer); fetchers whose last fetch is
    /// before `prune_before` are deleted first. Touches no key row, no audit record and
    /// not the seal.
    fn record_fetchers<'a>(
        &'a self,
        batch: &'a [Fetcher],
        cap: usize,
        prune_before: UnixTime,
    ) -> StoreFuture<'a, FetchersWritten>;

    /// The fetcher record of `keyset`, most recent fetch first. A row jwksd cannot read is
    /// left out (and logged): the record is evidence about fetchers, never a reason to
    /// fail.
    fn fetchers<'a>(&'a self, keyset: &'a str) -> StoreFuture<'a, Vec<Fetcher>>;

    /// Closes all connections once in-flight work is done (at shutdown). Later calls fail.
    fn close(&self) -> StoreFuture<'_, ()>;

    /// The database's own clock, in whole seconds since the Unix epoch, for a store that
    /// several processes share (PostgreSQL): the one clock their lifecycle decisions agree
    /// on. `None` (the default) for a store that one process owns (SQLite), whose own clock
    /// is the only one.
    fn database_time(&self) -> StoreFuture<'_, Option<UnixTime>> {
        Box::pin(async { Ok(None) })
    }
}

/// Joins fetcher rows and served-kid rows (keyed by user agent and network) of one key set,
/// keeping the fetchers' order. A row that does not decode is left out with a warning: the
/// record is evidence, never a reason for a request or a rotation to fail.
pub(crate) fn assemble_fetchers(
    fetchers: impl Iterator<Item = Result<Fetcher, sqlx::Error>>,
    kids: impl Iterator<Item = Result<((String, String), ServedKid), sqlx::Error>>,
) -> Vec<Fetcher> {
    let mut skipped = 0usize;
    let mut out: Vec<Fetcher> = fetchers
        .filter_map(|row| row.map_err(|_| skipped += 1).ok())
        .collect();
    let index: std::collections::HashMap<(String, String), usize> = out
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.user_agent.clone(), f.network.clone()), i))
        .collect();
    for row in kids {
        match row {
            Ok((fetcher, kid)) => {
                if let Some(&i) = index.get(&fetcher) {
                    out[i].kids.push(kid);
                }
            }
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            rows = skipped,
            "fetcher record rows that jwksd cannot read were left out"
        );
    }
    out
}

pub(crate) fn parse_state(text: &str) -> Result<KeyState, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

pub(crate) fn parse_alg(text: &str) -> Result<Algorithm, StoreError> {
    text.parse()
        .map_err(|e: crate::keys::alg::UnknownAlgorithm| StoreError::Corrupt(e.to_string()))
}

/// A fresh, empty store for unit tests: SQLite in `dir`, or, when `JWKSD_TEST_POSTGRES`
/// names a PostgreSQL server (as `scripts/test` sets it), a new database there.
#[cfg(test)]
pub(crate) async fn test_store(
    dir: &std::path::Path,
    master: std::sync::Arc<crate::keys::MasterKey>,
) -> std::sync::Arc<dyn Store> {
    use std::sync::Arc;
    match test_database().await {
        Some(url) => {
            let opening = postgres::PgStore::connect(&url).await.unwrap();
            let store = opening.finish(Some(master)).await.unwrap();
            store.commit_first_start().await.unwrap();
            Arc::new(store)
        }
        None => Arc::new(
            sqlite::SqliteStore::open(&dir.join("jwksd.db"), true, Some(master))
                .await
                .unwrap(),
        ),
    }
}

/// A new database on the server `JWKSD_TEST_POSTGRES` names, if it names one.
#[cfg(test)]
pub(crate) async fn test_database() -> Option<String> {
    use sqlx::Connection;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = std::env::var("JWKSD_TEST_POSTGRES")
        .ok()
        .filter(|v| !v.trim().is_empty())?;
    let name = format!(
        "jwksd_unit_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        crate::unix_now()
    );
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_reads_back_as_written_and_nothing_else_parses() {
        let seal = StoreSeal {
            head: AuditHead {
                seq: 42,
                hash: "ab".repeat(32),
            },
            keys_digest: "cd".repeat(32),
        };
        assert_eq!(StoreSeal::from_bytes(&seal.to_bytes()), Some(seal));
        for bad in ["", "42", "42 ab", "x ab cd", "42 ab cd extra", "42  ab cd"] {
            assert_eq!(StoreSeal::from_bytes(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
