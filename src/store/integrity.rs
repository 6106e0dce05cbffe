//! What every backend checks and writes the same way: key-row MACs, the store's seal (the
//! audit tail and the digest of the key rows under one MAC), the seal a process holds to,
//! the write connection that is discarded after a failed transaction, and the readiness
//! probe's reuse. The backends supply only the SQL, through [`SealTables`].
//!
//! Nothing here knows SQLite or PostgreSQL: a backend implements [`SealTables`] for its
//! connection type and calls [`check_seal`] inside every write and every load, and
//! [`write_seal`] in the same transaction as every change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;

use super::{key_row_mac_input, keys_digest, AuditHead, StoreError, StoreSeal, StoredKey};
use super::{KEY_ROW_MAC, STORE_SEAL_MAC};
use crate::audit::{chain_hash, AuditRecord, GENESIS_HASH};
use crate::keys::MasterKey;

/// The few reads and writes the seal needs, on one connection (inside the caller's
/// transaction).
pub(crate) trait SealTables: Send {
    /// The audit record with the highest `seq`, if any.
    async fn newest_audit(&mut self) -> Result<Option<AuditRecord>, StoreError>;
    /// The hash of audit record `seq`, if it exists.
    async fn audit_hash(&mut self, seq: i64) -> Result<Option<String>, StoreError>;
    /// The stored seal and its MAC, read in one statement (so a concurrent write never
    /// pairs one seal with another's MAC).
    async fn seal_parts(&mut self) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), StoreError>;
    /// Stores the seal and its MAC.
    async fn put_seal(&mut self, value: &[u8], mac: &[u8]) -> Result<(), StoreError>;
    /// Every key row's kid and MAC.
    async fn key_macs(&mut self) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError>;
}

/// Verifies a key row's MAC.
pub(crate) fn verify_row(
    master: &MasterKey,
    key: &StoredKey,
    mac: Option<&[u8]>,
) -> Result<(), StoreError> {
    let valid = mac.is_some_and(|tag| master.verify_mac(KEY_ROW_MAC, &key_row_mac_input(key), tag));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Tampered(format!(
            "key row {} (key set {:?}, state {}) does not carry a valid MAC: it was inserted or \
             edited by someone without the master key",
            key.record.kid, key.record.keyset, key.record.state
        )))
    }
}

/// The MAC a key row gets as `key` leaves it.
pub(crate) fn row_mac(master: &MasterKey, key: &StoredKey) -> Vec<u8> {
    master.mac(KEY_ROW_MAC, &key_row_mac_input(key))
}

/// The newest audit record in the table, or the genesis hash before the first.
pub(crate) async fn audit_end(conn: &mut impl SealTables) -> Result<AuditHead, StoreError> {
    let Some(last) = conn.newest_audit().await? else {
        return Ok(AuditHead {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        });
    };
    // The newest record's fields must still give its hash, or an edit of it would be
    // chained on and sealed over before the next full verification.
    if chain_hash(&last.prev_hash, last.seq, &last.event) != last.hash {
        return Err(StoreError::Tampered(format!(
            "the newest audit record ({}) was edited",
            last.seq
        )));
    }
    Ok(AuditHead {
        seq: last.seq,
        hash: last.hash,
    })
}

/// The digest of the key rows as they are in the table now.
pub(crate) async fn current_digest(conn: &mut impl SealTables) -> Result<String, StoreError> {
    let rows = conn.key_macs().await?;
    Ok(keys_digest(rows.iter().map(|(kid, mac)| {
        (kid.as_str(), mac.as_deref().unwrap_or_default())
    })))
}

/// The store's seal, its MAC verified; `None` on a store that was never written.
pub(crate) async fn read_seal(
    conn: &mut impl SealTables,
    master: &MasterKey,
) -> Result<Option<StoreSeal>, StoreError> {
    let (value, mac) = match conn.seal_parts().await? {
        (None, None) => return Ok(None),
        (Some(value), Some(mac)) => (value, mac),
        _ => {
            return Err(StoreError::Tampered(
                "the store's seal is incomplete".into(),
            ))
        }
    };
    if !master.verify_mac(STORE_SEAL_MAC, &value, &mac) {
        return Err(StoreError::Tampered(
            "the store's seal (the audit trail's head and the digest of the key rows) does not \
             carry a valid MAC"
                .into(),
        ));
    }
    StoreSeal::from_bytes(&value)
        .map(Some)
        .ok_or_else(|| StoreError::Tampered("the store's seal does not parse".into()))
}

/// Checks that the audit tail and the key rows (`digest`) are what the seal says jwksd last
/// wrote, and, once this process knows a seal (`known`), that the seal is that one or a newer
/// one that extends it. Returns the seal. A store is sealed from its first transaction
/// ([`super::Store::initialise`]), so a missing seal is always tampering: a wiped store is
/// refused, never re-keyed.
pub(crate) async fn check_seal(
    conn: &mut impl SealTables,
    master: &MasterKey,
    digest: &str,
    known: &Option<StoreSeal>,
) -> Result<StoreSeal, StoreError> {
    let end = audit_end(conn).await?;
    let Some(seal) = read_seal(conn, master).await? else {
        return Err(StoreError::Tampered(
            "the store's seal (the authenticated record of the audit trail's head and of the \
             key rows) is missing: it was deleted"
                .into(),
        ));
    };
    if let Some(known) = known.as_ref().filter(|known| *known != &seal) {
        // A newer seal is a commit this process has not noted yet (its writer has not
        // remembered it, or another jwksd on the same database made it: only jwksd holds the
        // key that authenticates seals); it must then extend the chain this jwksd knows. An
        // older or a different one was put back.
        if seal.head.seq <= known.head.seq || !chain_holds(conn, &known.head).await? {
            return Err(StoreError::Tampered(format!(
                "the store's seal is not the one this jwksd last wrote (it says the audit trail \
                 ends at record {}, jwksd wrote up to record {}): an older seal was put back",
                seal.head.seq, known.head.seq
            )));
        }
    }
    if seal.head != end {
        return Err(StoreError::Tampered(format!(
            "the audit trail ends at record {} but the store's seal says it ends at record {}: \
             records were deleted, added or replaced outside jwksd",
            end.seq, seal.head.seq
        )));
    }
    if seal.keys_digest != digest {
        return Err(StoreError::Tampered(
            "the key rows are not the ones jwksd last wrote (the store's seal holds their \
             digest): a row was deleted, added, or replaced by an older copy of itself"
                .into(),
        ));
    }
    Ok(seal)
}

/// Whether the audit record `head.seq` is still the one with hash `head.hash`.
async fn chain_holds(conn: &mut impl SealTables, head: &AuditHead) -> Result<bool, StoreError> {
    if head.seq == 0 {
        return Ok(head.hash == GENESIS_HASH);
    }
    let hash = conn.audit_hash(head.seq).await?;
    Ok(hash.as_deref() == Some(head.hash.as_str()))
}

/// Seals the store's state as this transaction leaves it: the audit tail and `digest`.
pub(crate) async fn write_seal(
    conn: &mut impl SealTables,
    master: &MasterKey,
    digest: &str,
) -> Result<StoreSeal, StoreError> {
    let seal = StoreSeal {
        head: audit_end(conn).await?,
        keys_digest: digest.to_owned(),
    };
    let value = seal.to_bytes();
    conn.put_seal(&value, &master.mac(STORE_SEAL_MAC, &value))
        .await?;
    Ok(seal)
}

/// The seal this process last wrote or verified. Once known, the store's seal must be this
/// one or a newer one extending it (see [`check_seal`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct SealMemory(Arc<std::sync::Mutex<Option<StoreSeal>>>);

impl SealMemory {
    fn guard(&self) -> std::sync::MutexGuard<'_, Option<StoreSeal>> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn known(&self) -> Option<StoreSeal> {
        self.guard().clone()
    }

    /// Holds to `seal` unless a newer one is already held. Commits are remembered after they
    /// land, by whichever task made them, so a reader whose snapshot began before a commit
    /// may come back with an older seal than the writer just remembered: that one never
    /// replaces the newer.
    pub(crate) fn remember(&self, seal: StoreSeal) {
        let mut guard = self.guard();
        if guard
            .as_ref()
            .is_none_or(|held| seal.head.seq >= held.head.seq)
        {
            *guard = Some(seal);
        }
    }

    /// A failed commit may still have landed (an I/O error after the data was written): the
    /// stored seal is then newer than the one remembered, and holding to the old one would
    /// refuse every later write as tampering. The next seal that verifies against the data
    /// is trusted instead.
    pub(crate) fn forget(&self) {
        *self.guard() = None;
    }
}

/// A readiness check younger than this reuses the last probe instead of writing again, so
/// that a busy health checker cannot turn readiness into a stream of commits.
pub(crate) const PROBE_REUSE: Duration = Duration::from_secs(1);

/// When a write probe ran, and its outcome (the error as text, to be reused).
type Probed = (Instant, Result<(), String>);

/// The last write probe, shared by concurrent readiness checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe(Arc<tokio::sync::Mutex<Option<Probed>>>);

impl Probe {
    /// The outcome of `write` run now, or of the last run if it is younger than
    /// [`PROBE_REUSE`]. Concurrent checks wait for one write and share it.
    pub(crate) async fn run<F>(&self, write: F) -> Result<(), StoreError>
    where
        F: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut last = self.0.lock().await;
        let outcome = match &*last {
            Some((at, outcome)) if at.elapsed() < PROBE_REUSE => outcome.clone(),
            _ => {
                let outcome = write.await.map_err(|e| e.to_string());
                *last = Some((Instant::now(), outcome.clone()));
                outcome
            }
        };
        outcome.map_err(StoreError::Unavailable)
    }

    /// A write that failed for storage reasons makes readiness fail at once (until the next
    /// probe, at most [`PROBE_REUSE`] later), so `/readyz` never says ready while commits
    /// fail; the seal held is forgotten ([`SealMemory::forget`]).
    pub(crate) async fn note_write<T>(&self, seals: &SealMemory, result: &Result<T, StoreError>) {
        if let Err(e) = result {
            if e.is_storage_failure() {
                *self.0.lock().await = Some((Instant::now(), Err(e.to_string())));
                seals.forget();
            }
        }
    }
}

/// A pooled connection for one write transaction. Unless [`WriteConn::committed`] is
/// called, dropping it closes the connection instead of returning it to the pool: after a
/// failed COMMIT (a full disk, an I/O error, a lost server) the connection's state is not
/// to be trusted (SQLite may have rolled back already, so sqlx's own rollback fails and the
/// connection stays "in a transaction" for good). A fresh connection is cheap.
pub(crate) struct WriteConn<DB: sqlx::Database> {
    pub(crate) conn: PoolConnection<DB>,
    committed: bool,
}

impl<DB: sqlx::Database> WriteConn<DB> {
    pub(crate) async fn acquire(pool: &sqlx::Pool<DB>) -> Result<Self, StoreError> {
        Ok(WriteConn {
            conn: pool.acquire().await?,
            committed: false,
        })
    }

    /// The transaction committed: the connection may go back to the pool.
    pub(crate) fn committed(&mut self) {
        self.committed = true;
    }
}

impl<DB: sqlx::Database> Drop for WriteConn<DB> {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}
