//! The embedded backend: one SQLite file in the data directory, through sqlx.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a commit returns only once it is on
//! disk: an operator's rotation is acknowledged only after it is durable. A partial unique
//! index forbids two current keys in one key set, and a CHECK forbids a private half on a
//! key that may no longer sign, so a bug above cannot store either.
//!
//! Storage faults are transient, not fatal: a connection whose write transaction failed
//! (a full disk, an I/O error) is closed rather than returned to the pool, so the next
//! write gets a fresh connection once the fault is gone, and [`Store::ping`] is a real
//! write, so readiness says whether the store can commit. Every file of the store
//! (`jwksd.db`, `-wal`, `-shm`) and every backup is created readable by its owner only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite};

use super::integrity::{
    check_seal, current_digest, read_seal, row_mac, verify_row, write_seal, Probe, SealMemory,
    SealTables, WriteConn,
};
use super::{
    keys_digest, parse_alg, parse_state, AuditHead, Change, Fetcher, FetchersWritten, ServedKid,
    Store, StoreError, StoreFuture, StoredKey,
};
use crate::audit::{chain_hash, AuditEvent, AuditFilter, AuditRecord, GENESIS_HASH};
use crate::keys::MasterKey;
use crate::rotation::{KeyRecord, KeyState, UnixTime};

/// Schema migrations, applied in order; the number of applied ones is kept in `meta`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE keys (
    kid            TEXT PRIMARY KEY,
    keyset         TEXT NOT NULL,
    alg            TEXT NOT NULL,
    state          TEXT NOT NULL
                   CHECK (state IN ('next', 'current', 'retired', 'removed', 'revoked')),
    created_at     INTEGER NOT NULL,
    published_at   INTEGER NOT NULL,
    activated_at   INTEGER,
    retired_at     INTEGER,
    remove_at      INTEGER,
    removed_at     INTEGER,
    revoked_at     INTEGER,
    public_jwk     TEXT NOT NULL,
    cert_der       BLOB NOT NULL,
    sealed_private BLOB,
    CHECK (sealed_private IS NULL OR state IN ('next', 'current'))
);
CREATE UNIQUE INDEX keys_one_current_per_keyset ON keys (keyset) WHERE state = 'current';
CREATE INDEX keys_by_keyset ON keys (keyset, created_at);
"#,
    r#"
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    time       INTEGER NOT NULL,
    event      TEXT NOT NULL,
    caller     TEXT,
    client_id  TEXT,
    keyset     TEXT,
    kid        TEXT,
    jti        TEXT,
    audience   TEXT,
    expires_at INTEGER,
    detail     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_client ON audit (client_id, seq);
CREATE INDEX audit_by_caller ON audit (caller, seq);
CREATE INDEX audit_by_kid ON audit (kid, seq);
"#,
    // Every key row carries an HMAC under a key derived from the master key; the start-up
    // check of generated kids reads the trail by event.
    r#"
ALTER TABLE keys ADD COLUMN mac BLOB;
CREATE INDEX audit_by_event ON audit (event, seq);
"#,
    // The fetcher record (see `crate::fetchers`): tables of their own, which no key load,
    // row MAC or seal reads, so nothing in them can keep the keys from loading.
    r#"
CREATE TABLE fetchers (
    keyset     TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    network    TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (keyset, user_agent, network)
);
CREATE TABLE fetcher_kids (
    keyset       TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    network      TEXT NOT NULL,
    kid          TEXT NOT NULL,
    first_served INTEGER NOT NULL,
    last_served  INTEGER NOT NULL,
    PRIMARY KEY (keyset, user_agent, network, kid)
);
CREATE INDEX fetcher_kids_by_kid ON fetcher_kids (keyset, kid);
"#,
];

/// Why the SQLite file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot create the store {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store {path} is damaged ({detail}); restore it from a backup")]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "the store {path} was written by a newer jwksd (schema {found}, this build knows {known}); \
         run the newer version or restore a backup made by this one"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// Why `jwksd backup` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "{0} already exists (a file, or a symbolic link even if it points nowhere); a backup \
         never replaces or follows one: choose a new file name"
    )]
    Exists(PathBuf),
    #[error("cannot create the backup file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the copy into {path} failed (the partial file was removed): {source}")]
    Copy { path: PathBuf, source: StoreError },
}

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Authenticates key rows and the audit head; `None` for a handle that only copies the
    /// file (`jwksd backup`).
    master: Option<Arc<MasterKey>>,
    /// A checkpoint that should erase old pages from the WAL could not finish (a reader held
    /// it); retried after the next write until it does.
    checkpoint_pending: Arc<AtomicBool>,
    /// The seal this process last wrote or verified: an older seal put back (with the
    /// records after it deleted, or an older copy of a row) is refused while jwksd runs, not
    /// only what fails a MAC.
    seals: SealMemory,
    /// The last write probe, shared by concurrent readiness checks.
    probe: Probe,
}

/// Suffixes of the files SQLite keeps beside the database: WAL, shared memory, rollback
/// journal.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates the empty file `path` readable and writable by its owner only. `create_new`
/// (O_EXCL) refuses an existing file and does not follow a symbolic link, dangling or not,
/// so nothing is ever written through a link or into a file someone else prepared.
fn create_owner_only(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Files of an existing store that others may read: stores of older versions (which made
/// the WAL 0644) and restores with `cp`. Tightened once, before SQLite opens them, because
/// SQLite gives a new `-wal`/`-shm` the mode of the database file.
#[cfg(unix)]
fn tighten_existing(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_owned()];
    for suffix in SIDE_FILES {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        files.push(PathBuf::from(side));
    }
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                "the store file was readable by other users; it is now 0600. Whoever could \
                 read it saw key metadata, audit records and sealed (encrypted) private keys"
            ),
            Err(e) => tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                error = %e,
                "the store file is readable by other users and could not be changed; run `chmod 600` on it"
            ),
        }
    }
}

#[cfg(not(unix))]
fn tighten_existing(_: &Path) {}

impl SqliteStore {
    /// Opens the store at `path`, creating the file only when `create` is true. Checks the
    /// file's integrity and brings its schema up to date. Without `master` the handle can
    /// only read the audit trail and copy the file.
    pub async fn open(
        path: &Path,
        create: bool,
        master: Option<Arc<MasterKey>>,
    ) -> Result<Self, OpenError> {
        let open_err = |source| OpenError::Open {
            path: path.to_owned(),
            source,
        };
        let damaged = |detail: String| OpenError::Damaged {
            path: path.to_owned(),
            detail,
        };
        if create {
            // SQLite would create the file 0644 (less the umask) and its -wal and -shm with
            // the same mode; made here first, all of them are 0600 from the start.
            create_owner_only(path).map_err(|source| OpenError::Create {
                path: path.to_owned(),
                source,
            })?;
        } else {
            tighten_existing(path);
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Erased private halves are overwritten on disk, not just unlinked.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // Whatever path left a connection inside a transaction (a cancelled request, a
            // failed rollback), it is closed rather than handed to the next request.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(options)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(db) => damaged(db.message().to_owned()),
                other => open_err(other),
            })?;

        let check: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&pool)
            .await
            .map_err(|e| damaged(e.to_string()))?;
        if check != "ok" {
            return Err(damaged(check));
        }

        let store = SqliteStore {
            pool,
            master,
            checkpoint_pending: Arc::new(AtomicBool::new(false)),
            seals: SealMemory::default(),
            probe: Probe::default(),
        };
        store.migrate(path).await?;
        Ok(store)
    }

    async fn migrate(&self, path: &Path) -> Result<(), OpenError> {
        let damaged = |e: sqlx::Error| OpenError::Damaged {
            path: path.to_owned(),
            detail: e.to_string(),
        };
        let mut conn = self.pool.acquire().await.map_err(damaged)?;
        let mut tx = conn.begin().await.map_err(damaged)?;
        let has_meta: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(damaged)?;
        let applied: i64 = if has_meta == 0 {
            0
        } else {
            let version: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT value FROM meta WHERE name = 'schema_version'")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(damaged)?;
            version
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| OpenError::Damaged {
                    path: path.to_owned(),
                    detail: "schema_version is missing".into(),
                })?
        };
        let known = MIGRATIONS.len() as i64;
        if applied > known {
            return Err(OpenError::TooNew {
                path: path.to_owned(),
                found: applied,
                known,
            });
        }
        for script in &MIGRATIONS[applied as usize..] {
            sqlx::raw_sql(script)
                .execute(&mut *tx)
                .await
                .map_err(damaged)?;
        }
        if applied < known {
            sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)")
                .bind(known.to_string().into_bytes())
                .execute(&mut *tx)
                .await
                .map_err(damaged)?;
        }
        tx.commit().await.map_err(damaged)?;
        Ok(())
    }

    /// Writes a consistent copy of the whole store to `dest` (SQLite `VACUUM INTO`), while
    /// the service keeps running. The copy holds sealed private keys only: it is useless
    /// without the master key, which must be backed up separately.
    ///
    /// `dest` is created here, empty and 0600, before SQLite writes into it (`VACUUM INTO`
    /// accepts an empty file): it is never readable by others, not even for a moment, and an
    /// existing file or a symbolic link at `dest` is refused. The copy is written with the
    /// store's `synchronous=FULL`, so it is on disk when this returns.
    pub async fn backup_to(&self, dest: &Path) -> Result<(), BackupError> {
        match create_owner_only(dest) {
            Ok(file) => drop(file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(dest.to_owned()))
            }
            Err(source) => {
                return Err(BackupError::Create {
                    path: dest.to_owned(),
                    source,
                })
            }
        }
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(dest.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await;
        if let Err(e) = copied {
            // The file is the one made above: a half-written copy must not pass for a backup.
            let _ = std::fs::remove_file(dest);
            return Err(BackupError::Copy {
                path: dest.to_owned(),
                source: e.into(),
            });
        }
        Ok(())
    }

    /// One small durable write: what readiness needs to know is whether a commit works.
    async fn write_probe(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES ('ready_probe', ?)")
            .bind(crate::unix_now().to_string().into_bytes())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Merges the whole WAL into the database file and empties it: afterwards the file
    /// alone holds the store (a first start renames it into place).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        if busy != 0 {
            return Err(StoreError::Unavailable(
                "the journal could not be merged: a reader held it".into(),
            ));
        }
        Ok(())
    }

    async fn apply_change(&self, change: &Change) -> Result<(), StoreError> {
        let master = self.master()?;
        // Every seal this process writes must be newer than the last (see `check_seal`): a
        // key change always leaves its audit records.
        if change.events.is_empty() {
            return Err(StoreError::Conflict(
                "a key change without its audit records is never written".into(),
            ));
        }
        let mut conn = WriteConn::acquire(&self.pool).await?;
        let mut tx = begin_immediate(&mut conn).await?;
        // Nothing is written on top of a store someone else changed: the rows and the
        // audit tail must be exactly what the seal says jwksd last wrote.
        let digest = current_digest(&mut *tx).await?;
        check_seal(&mut *tx, master, &digest, &self.seals.known()).await?;
        // Keys leaving `current` go first, so the one-current index holds after each
        // statement.
        let mut transitions: Vec<_> = change.transitions.iter().collect();
        transitions.sort_by_key(|t| t.from != KeyState::Current);
        for t in transitions {
            let row = sqlx::query("SELECT * FROM keys WHERE kid = ?")
                .bind(&t.kid)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::Conflict(format!(
                    "key {} no longer exists",
                    t.kid
                )));
            };
            let mut key = key_from_row(&row)?;
            let mac: Option<Vec<u8>> = row.try_get("mac")?;
            // A row edited since the last load is never carried forward under a fresh MAC.
            verify_row(master, &key, mac.as_deref())?;
            if key.record.state != t.from {
                return Err(StoreError::Conflict(format!(
                    "key {} is no longer {}",
                    t.kid, t.from
                )));
            }
            t.apply_to(&mut key);
            let r = &key.record;
            let done = sqlx::query(
                "UPDATE keys SET state = ?, published_at = ?, activated_at = ?, retired_at = ?, \
                 remove_at = ?, removed_at = ?, revoked_at = ?, sealed_private = ?, mac = ? \
                 WHERE kid = ? AND state = ?",
            )
            .bind(r.state.as_str())
            .bind(r.published_at)
            .bind(r.activated_at)
            .bind(r.retired_at)
            .bind(r.remove_at)
            .bind(r.removed_at)
            .bind(r.revoked_at)
            .bind(&key.sealed_private)
            .bind(row_mac(master, &key))
            .bind(&t.kid)
            .bind(t.from.as_str())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!(
                    "key {} is no longer {}",
                    t.kid, t.from
                )));
            }
        }
        for key in &change.inserts {
            let r = &key.record;
            sqlx::query(
                "INSERT INTO keys (kid, keyset, alg, state, created_at, published_at, \
                 activated_at, retired_at, remove_at, removed_at, revoked_at, public_jwk, \
                 cert_der, sealed_private, mac) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.kid)
            .bind(&r.keyset)
            .bind(r.alg.as_str())
            .bind(r.state.as_str())
            .bind(r.created_at)
            .bind(r.published_at)
            .bind(r.activated_at)
            .bind(r.retired_at)
            .bind(r.remove_at)
            .bind(r.removed_at)
            .bind(r.revoked_at)
            .bind(&key.public_jwk)
            .bind(&key.cert_der)
            .bind(&key.sealed_private)
            .bind(row_mac(master, key))
            .execute(&mut *tx)
            .await?;
        }
        append_in_tx(&mut tx, &change.events).await?;
        let digest = current_digest(&mut *tx).await?;
        let seal = write_seal(&mut *tx, master, &digest).await?;
        tx.commit().await?;
        conn.committed();
        self.seals.remember(seal);
        let erased = change
            .transitions
            .iter()
            .any(|t| !matches!(t.to, KeyState::Next | KeyState::Current));
        if erased {
            // Older copies of the erased pages live on in the WAL until it is
            // checkpointed and truncated.
            self.checkpoint().await;
        } else {
            self.retry_checkpoint().await;
        }
        Ok(())
    }

    async fn append_events(&self, events: &[AuditEvent]) -> Result<Vec<i64>, StoreError> {
        let master = self.master()?;
        let mut conn = WriteConn::acquire(&self.pool).await?;
        let mut tx = begin_immediate(&mut conn).await?;
        let digest = current_digest(&mut *tx).await?;
        check_seal(&mut *tx, master, &digest, &self.seals.known()).await?;
        let seqs = append_in_tx(&mut tx, events).await?;
        let seal = write_seal(&mut *tx, master, &digest).await?;
        tx.commit().await?;
        self.seals.remember(seal);
        conn.committed();
        self.retry_checkpoint().await;
        Ok(seqs)
    }

    fn master(&self) -> Result<&MasterKey, StoreError> {
        self.master.as_deref().ok_or(StoreError::Unauthenticated)
    }

    async fn write_fetchers(
        &self,
        batch: &[Fetcher],
        cap: usize,
        prune_before: UnixTime,
    ) -> Result<FetchersWritten, StoreError> {
        let mut written = FetchersWritten::default();
        let mut conn = WriteConn::acquire(&self.pool).await?;
        let mut tx = begin_immediate(&mut conn).await?;
        sqlx::query(
            "DELETE FROM fetcher_kids WHERE (keyset, user_agent, network) IN \
             (SELECT keyset, user_agent, network FROM fetchers WHERE last_seen < ?)",
        )
        .bind(prune_before)
        .execute(&mut *tx)
        .await?;
        written.pruned = sqlx::query("DELETE FROM fetchers WHERE last_seen < ?")
            .bind(prune_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for f in batch {
            let known: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM fetchers WHERE keyset = ? AND user_agent = ? AND network = ?",
            )
            .bind(&f.keyset)
            .bind(&f.user_agent)
            .bind(&f.network)
            .fetch_one(&mut *tx)
            .await?;
            if known == 0 {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM fetchers WHERE keyset = ?")
                        .bind(&f.keyset)
                        .fetch_one(&mut *tx)
                        .await?;
                if count as usize >= cap {
                    written.refused_at_cap += 1;
                    continue;
                }
            }
            sqlx::query(
                "INSERT INTO fetchers (keyset, user_agent, network, first_seen, last_seen) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (keyset, user_agent, network) DO UPDATE SET \
                 first_seen = min(first_seen, excluded.first_seen), \
                 last_seen = max(last_seen, excluded.last_seen)",
            )
            .bind(&f.keyset)
            .bind(&f.user_agent)
            .bind(&f.network)
            .bind(f.first_seen)
            .bind(f.last_seen)
            .execute(&mut *tx)
            .await?;
            for k in &f.kids {
                sqlx::query(
                    "INSERT INTO fetcher_kids (keyset, user_agent, network, kid, first_served, \
                     last_served) VALUES (?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (keyset, user_agent, network, kid) DO UPDATE SET \
                     first_served = min(first_served, excluded.first_served), \
                     last_served = max(last_served, excluded.last_served)",
                )
                .bind(&f.keyset)
                .bind(&f.user_agent)
                .bind(&f.network)
                .bind(&k.kid)
                .bind(k.first_served)
                .bind(k.last_served)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        conn.committed();
        Ok(written)
    }

    async fn read_fetchers(&self, keyset: &str) -> Result<Vec<Fetcher>, StoreError> {
        // One read transaction: fetchers and their kids of the same instant.
        let mut tx = self.pool.begin().await?;
        let fetchers = sqlx::query(
            "SELECT keyset, user_agent, network, first_seen, last_seen FROM fetchers \
             WHERE keyset = ? ORDER BY last_seen DESC, user_agent, network",
        )
        .bind(keyset)
        .fetch_all(&mut *tx)
        .await?;
        let kids = sqlx::query(
            "SELECT user_agent, network, kid, first_served, last_served FROM fetcher_kids \
             WHERE keyset = ? ORDER BY first_served, kid",
        )
        .bind(keyset)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(super::assemble_fetchers(
            fetchers.iter().map(|row| {
                Ok(Fetcher {
                    keyset: row.try_get("keyset")?,
                    user_agent: row.try_get("user_agent")?,
                    network: row.try_get("network")?,
                    first_seen: row.try_get("first_seen")?,
                    last_seen: row.try_get("last_seen")?,
                    kids: Vec::new(),
                })
            }),
            kids.iter().map(|row| {
                Ok((
                    (row.try_get("user_agent")?, row.try_get("network")?),
                    ServedKid {
                        kid: row.try_get("kid")?,
                        first_served: row.try_get("first_served")?,
                        last_served: row.try_get("last_served")?,
                    },
                ))
            }),
        ))
    }

    /// Truncates the WAL, so that pages holding erased private halves leave the disk. A
    /// reader can keep SQLite from finishing (`busy`); then it is retried after the next
    /// write. A failure here never undoes or hides the committed change.
    async fn checkpoint(&self) {
        let result: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await;
        let done = matches!(result, Ok((0, _, _)));
        if !done {
            tracing::warn!(
                outcome = %match &result {
                    Ok(_) => "busy: a reader holds the WAL".to_owned(),
                    Err(e) => e.to_string(),
                },
                "the WAL checkpoint that erases retired private halves did not finish; retrying after the next write"
            );
        }
        self.checkpoint_pending.store(!done, Ordering::SeqCst);
    }

    async fn retry_checkpoint(&self) {
        if self.checkpoint_pending.load(Ordering::SeqCst) {
            self.checkpoint().await;
        }
    }
}

fn key_from_row(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        record: KeyRecord {
            kid: row.try_get("kid")?,
            keyset: row.try_get("keyset")?,
            alg: parse_alg(row.try_get("alg")?)?,
            state: parse_state(row.try_get("state")?)?,
            created_at: row.try_get("created_at")?,
            published_at: row.try_get("published_at")?,
            activated_at: row.try_get("activated_at")?,
            retired_at: row.try_get("retired_at")?,
            remove_at: row.try_get("remove_at")?,
            removed_at: row.try_get("removed_at")?,
            revoked_at: row.try_get("revoked_at")?,
        },
        public_jwk: row.try_get("public_jwk")?,
        cert_der: row.try_get("cert_der")?,
        sealed_private: row.try_get("sealed_private")?,
    })
}

impl Store for SqliteStore {
    fn load_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let master = self.master()?;
            // Taken before the snapshot begins: every seal remembered by then was committed
            // by then, so the snapshot holds it or a newer one.
            let known = self.seals.known();
            // One read transaction: the rows and the seal are of the same instant.
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query("SELECT * FROM keys ORDER BY created_at, kid")
                .fetch_all(&mut *tx)
                .await?;
            let mut keys = Vec::with_capacity(rows.len());
            let mut macs = Vec::with_capacity(rows.len());
            for row in &rows {
                let key = key_from_row(row)?;
                let mac: Option<Vec<u8>> = row.try_get("mac")?;
                verify_row(master, &key, mac.as_deref())?;
                macs.push((key.record.kid.clone(), mac.unwrap_or_default()));
                keys.push(key);
            }
            let digest = keys_digest(macs.iter().map(|(k, m)| (k.as_str(), m.as_slice())));
            let seal = check_seal(&mut *tx, master, &digest, &known).await?;
            tx.rollback().await?;
            self.seals.remember(seal);
            Ok(keys)
        })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let result = self.apply_change(change).await;
            self.probe.note_write(&self.seals, &result).await;
            result
        })
    }

    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> StoreFuture<'a, Vec<i64>> {
        Box::pin(async move {
            let result = self.append_events(events).await;
            self.probe.note_write(&self.seals, &result).await;
            result
        })
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<AuditHead>> {
        Box::pin(async move {
            let master = self.master()?;
            let mut conn = self.pool.acquire().await?;
            Ok(read_seal(&mut *conn, master).await?.map(|seal| seal.head))
        })
    }

    fn authenticate_legacy_rows<'a>(
        &'a self,
        generated: &'a [String],
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let master = self.master()?;
            let mut conn = WriteConn::acquire(&self.pool).await?;
            let mut tx = begin_immediate(&mut conn).await?;
            let sealed_before: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM meta WHERE name LIKE 'store_seal%') \
                      + (SELECT count(*) FROM keys WHERE mac IS NOT NULL)",
            )
            .fetch_one(&mut *tx)
            .await?;
            if sealed_before > 0 {
                return Err(StoreError::Tampered(
                    "the store's master-key check says it predates authenticated key rows, but \
                     it is already sealed: an old check was put back from a backup"
                        .into(),
                ));
            }
            let rows = sqlx::query("SELECT * FROM keys")
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                let key = key_from_row(row)?;
                if !generated.contains(&key.record.kid) {
                    return Err(StoreError::Tampered(format!(
                        "key row {} has no key.generated record in the audit trail: jwksd did \
                         not make it",
                        key.record.kid
                    )));
                }
                sqlx::query("UPDATE keys SET mac = ? WHERE kid = ?")
                    .bind(row_mac(master, &key))
                    .bind(&key.record.kid)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)")
                .bind(check_name)
                .bind(master_check)
                .execute(&mut *tx)
                .await?;
            let digest = current_digest(&mut *tx).await?;
            let seal = write_seal(&mut *tx, master, &digest).await?;
            tx.commit().await?;
            conn.committed();
            self.seals.remember(seal);
            Ok(rows.len())
        })
    }

    fn initialise<'a>(
        &'a self,
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let master = self.master()?;
            let mut conn = WriteConn::acquire(&self.pool).await?;
            let mut tx = begin_immediate(&mut conn).await?;
            let used: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM keys) + (SELECT count(*) FROM audit) \
                      + (SELECT count(*) FROM meta WHERE name LIKE 'store_seal%')",
            )
            .fetch_one(&mut *tx)
            .await?;
            if used > 0 {
                return Err(StoreError::Tampered(
                    "the store has keys, audit records or a seal but no master-key check".into(),
                ));
            }
            sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?)")
                .bind(check_name)
                .bind(master_check)
                .execute(&mut *tx)
                .await?;
            let seal = write_seal(&mut *tx, master, &keys_digest([])).await?;
            tx.commit().await?;
            conn.committed();
            self.seals.remember(seal);
            Ok(())
        })
    }

    fn audit_page<'a>(
        &'a self,
        filter: &'a AuditFilter,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<AuditRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM audit WHERE seq > ? \
                 AND (? IS NULL OR time >= ?) \
                 AND (? IS NULL OR client_id = ?) \
                 AND (? IS NULL OR caller = ?) \
                 AND (? IS NULL OR kid = ?) \
                 AND (? IS NULL OR event = ?) \
                 ORDER BY seq LIMIT ?",
            )
            .bind(after)
            .bind(filter.since)
            .bind(filter.since)
            .bind(&filter.client_id)
            .bind(&filter.client_id)
            .bind(&filter.caller)
            .bind(&filter.caller)
            .bind(&filter.kid)
            .bind(&filter.kid)
            .bind(&filter.event)
            .bind(&filter.event)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(audit_from_row).collect()
        })
    }

    fn meta<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?)
        })
    }

    fn set_meta<'a>(&'a self, name: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)")
                .bind(name)
                .bind(value)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn record_fetchers<'a>(
        &'a self,
        batch: &'a [Fetcher],
        cap: usize,
        prune_before: UnixTime,
    ) -> StoreFuture<'a, FetchersWritten> {
        Box::pin(self.write_fetchers(batch, cap, prune_before))
    }

    fn fetchers<'a>(&'a self, keyset: &'a str) -> StoreFuture<'a, Vec<Fetcher>> {
        Box::pin(self.read_fetchers(keyset))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.pool.close().await;
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.probe.run(self.write_probe()))
    }
}

/// `BEGIN IMMEDIATE`: takes the write lock first, so what the transaction reads (the audit
/// chain head) cannot go stale before it writes.
async fn begin_immediate(
    conn: &mut WriteConn<Sqlite>,
) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
    Ok(conn.conn.begin_with("BEGIN IMMEDIATE").await?)
}

impl SealTables for sqlx::SqliteConnection {
    async fn newest_audit(&mut self) -> Result<Option<AuditRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self)
            .await?;
        row.as_ref().map(audit_from_row).transpose()
    }

    async fn audit_hash(&mut self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM audit WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&mut *self)
            .await?)
    }

    async fn seal_parts(&mut self) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT value FROM meta WHERE name = 'store_seal'), \
                    (SELECT value FROM meta WHERE name = 'store_seal_mac')",
        )
        .fetch_one(&mut *self)
        .await?)
    }

    async fn put_seal(&mut self, value: &[u8], mac: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES ('store_seal', ?)")
            .bind(value)
            .execute(&mut *self)
            .await?;
        sqlx::query("INSERT OR REPLACE INTO meta (name, value) VALUES ('store_seal_mac', ?)")
            .bind(mac)
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    async fn key_macs(&mut self) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        Ok(sqlx::query_as("SELECT kid, mac FROM keys")
            .fetch_all(&mut *self)
            .await?)
    }
}

/// Appends `events` after the current chain head, inside `tx`.
async fn append_in_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    events: &[AuditEvent],
) -> Result<Vec<i64>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
    let mut seqs = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let hash = chain_hash(&prev, seq, event);
        sqlx::query(
            "INSERT INTO audit (seq, time, event, caller, client_id, keyset, kid, jti, audience, \
             expires_at, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(event.time)
        .bind(&event.event)
        .bind(&event.caller)
        .bind(&event.client_id)
        .bind(&event.keyset)
        .bind(&event.kid)
        .bind(&event.jti)
        .bind(&event.audience)
        .bind(event.expires_at)
        .bind(&event.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        seqs.push(seq);
        prev = hash;
    }
    Ok(seqs)
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            time: row.try_get("time")?,
            event: row.try_get("event")?,
            caller: row.try_get("caller")?,
            client_id: row.try_get("client_id")?,
            keyset: row.try_get("keyset")?,
            kid: row.try_get("kid")?,
            jti: row.try_get("jti")?,
            audience: row.try_get("audience")?,
            expires_at: row.try_get("expires_at")?,
            detail: row.try_get("detail")?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
