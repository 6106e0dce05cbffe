//! The PostgreSQL backend: one database for one or more jwksd processes, through sqlx (pure
//! Rust, no libpq; TLS through rustls when the URL's `sslmode` asks for it).
//!
//! It keeps the same tables, the same MACs and the same seal as the SQLite backend (the
//! checks themselves are in [`super::integrity`]). What PostgreSQL adds:
//!
//! - **One chain with several writers.** Every write transaction first takes one
//!   transaction-scoped advisory lock ([`WRITE_LOCK`]), so writes of all processes on the
//!   database are serialized: each reads the audit head and the seal, checks them and
//!   appends after them while no one else can. Loads read rows and seal in one
//!   `REPEATABLE READ` snapshot. A seal newer than the one a process knows is accepted when
//!   it extends the chain that process knows (another process's commit); an older one is
//!   refused.
//! - **The first start is one transaction.** [`PgStore::connect`] takes the lock, applies
//!   the migrations and, on a database jwksd never initialised, keeps that transaction open
//!   ([`PgOpening::finish`]): the master-key check, the seal and the first keys of every key
//!   set are written inside it, and [`PgStore::commit_first_start`] commits all of it at
//!   once. A crash before leaves the database as it was; a second process starting at the
//!   same time waits for the lock and then finds the store made.
//! - **Storage faults** (the server down, a lost connection, a full disk on its side) are
//!   [`StoreError::Database`] errors that [`StoreError::is_storage_failure`] calls storage
//!   failures (503); a connection whose write transaction failed is discarded, so service
//!   resumes by itself when the database is back. **While the database is down, what needs
//!   it is refused at once**, not after the pool's [`ACQUIRE_TIMEOUT`]: a lost connection,
//!   a refused one, or a connection slow to come starts one background probe, and once that
//!   probe fails every operation answers [`StoreError::Unavailable`] at once until a probe
//!   connects again (see [`super::outage`]). The listener's lost connection counts too, so an
//!   idle replica knows before its first request.
//!
//! - **Replicas hear each other.** Every committed key change sends a `NOTIFY` on
//!   [`KEY_CHANGES_CHANNEL`] from inside its transaction (delivered on commit only), and
//!   [`PgStore::watch_key_changes`] listens for them on a connection of its own, so that
//!   every jwksd on the database re-reads its keys within moments of a change.
//!
//! The constraints of the SQLite schema hold here too: a partial unique index makes two
//! current keys in one key set impossible, and a CHECK forbids a private half on a key that
//! may no longer sign. An erased private half is gone from the live row at commit; its old
//! row version stays in the table file until VACUUM reclaims it, so the change that erases
//! one is followed by a `VACUUM` of the key table (best effort, logged when it fails).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, Row, Transaction};

use super::integrity::{
    check_seal, current_digest, read_seal, row_mac, verify_row, write_seal, Probe, SealMemory,
    SealTables, WriteConn,
};
use super::outage::{Outage, ProbeFn, SUSPECT_AFTER};
use super::{
    keys_digest, parse_alg, parse_state, AuditHead, Change, Fetcher, FetchersWritten, ServedKid,
    Store, StoreError, StoreFuture, StoredKey,
};
use crate::audit::{chain_hash, AuditEvent, AuditFilter, AuditRecord, GENESIS_HASH};
use crate::keys::MasterKey;
use crate::rotation::{KeyRecord, KeyState, UnixTime};

/// Schema migrations, applied in order inside one transaction; the number applied is kept
/// in `meta` as `schema_version`. The schema is the SQLite one's final state.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE keys (
    kid            TEXT PRIMARY KEY,
    keyset         TEXT NOT NULL,
    alg            TEXT NOT NULL,
    state          TEXT NOT NULL
                   CHECK (state IN ('next', 'current', 'retired', 'removed', 'revoked')),
    created_at     BIGINT NOT NULL,
    published_at   BIGINT NOT NULL,
    activated_at   BIGINT,
    retired_at     BIGINT,
    remove_at      BIGINT,
    removed_at     BIGINT,
    revoked_at     BIGINT,
    public_jwk     TEXT NOT NULL,
    cert_der       BYTEA NOT NULL,
    sealed_private BYTEA,
    mac            BYTEA,
    CHECK (sealed_private IS NULL OR state IN ('next', 'current'))
);
CREATE UNIQUE INDEX keys_one_current_per_keyset ON keys (keyset) WHERE state = 'current';
CREATE INDEX keys_by_keyset ON keys (keyset, created_at);
CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    event      TEXT NOT NULL,
    caller     TEXT,
    client_id  TEXT,
    keyset     TEXT,
    kid        TEXT,
    jti        TEXT,
    audience   TEXT,
    expires_at BIGINT,
    detail     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_client ON audit (client_id, seq);
CREATE INDEX audit_by_caller ON audit (caller, seq);
CREATE INDEX audit_by_kid ON audit (kid, seq);
CREATE INDEX audit_by_event ON audit (event, seq);
"#,
    // The fetcher record (see `crate::fetchers`): tables of their own, which no key load,
    // row MAC or seal reads, so nothing in them can keep the keys from loading.
    r#"
CREATE TABLE fetchers (
    keyset     TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    network    TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    PRIMARY KEY (keyset, user_agent, network)
);
CREATE TABLE fetcher_kids (
    keyset       TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    network      TEXT NOT NULL,
    kid          TEXT NOT NULL,
    first_served BIGINT NOT NULL,
    last_served  BIGINT NOT NULL,
    PRIMARY KEY (keyset, user_agent, network, kid)
);
CREATE INDEX fetcher_kids_by_kid ON fetcher_kids (keyset, kid);
"#,
];

/// The advisory lock every write transaction takes first (the bytes of "jwksd" as a
/// number): all writers to one database, in every process, go one at a time. Advisory locks
/// are per database, so databases on one server do not wait for each other.
pub const WRITE_LOCK: i64 = 0x006a_776b_7364;

/// The advisory lock of fetcher-record writes: replicas flush their batches one at a time
/// (so the per-key-set cap holds and two upserts of one row never deadlock), without
/// waiting for key changes or audit writes, which take [`WRITE_LOCK`].
pub const FETCHERS_LOCK: i64 = WRITE_LOCK + 1;

/// How long a request waits for a connection before it is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel on which every committed key change is announced (`NOTIFY`, sent inside the
/// change's transaction, so it is delivered on commit only). Channels are per database, so
/// databases on one server do not hear each other.
pub const KEY_CHANGES_CHANNEL: &str = "jwksd_key_changes";

/// The longest wait between two attempts to (re)connect the change listener.
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(10);

/// Why the database could not be opened. `name` is the URL without its password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("server.database_url is not a PostgreSQL URL jwksd can use ({detail})")]
    Url { detail: String },
    #[error(
        "cannot reach the PostgreSQL database {name}: {source}; is the server running and \
         reachable, and are user, password and sslmode right?"
    )]
    Connect { name: String, source: sqlx::Error },
    #[error("cannot prepare the PostgreSQL database {name}: {source}")]
    Migrate { name: String, source: sqlx::Error },
    #[error(
        "the PostgreSQL database {name} was written by a newer jwksd (schema {found}, this build \
         knows {known}); run the newer version"
    )]
    TooNew {
        name: String,
        found: i64,
        known: i64,
    },
    #[error("the PostgreSQL database {name} holds a damaged jwksd schema: {detail}")]
    Damaged { name: String, detail: String },
}

/// A database connected and migrated, inside the transaction that holds the write lock;
/// [`PgOpening::finish`] decides what happens to it.
pub struct PgOpening {
    pool: PgPool,
    tx: Transaction<'static, Postgres>,
    fresh: bool,
}

impl PgOpening {
    /// Whether jwksd never initialised this database (no master-key check yet).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The store. On a fresh database the opening transaction stays open and every
    /// operation runs inside it until [`PgStore::commit_first_start`]; otherwise it is
    /// committed now (the migrations).
    pub async fn finish(self, master: Option<Arc<MasterKey>>) -> Result<PgStore, StoreError> {
        let first_start = if self.fresh {
            Some(self.tx)
        } else {
            self.tx.commit().await?;
            None
        };
        Ok(PgStore {
            outage: outage_guard(&self.pool),
            pinned: Arc::new(AtomicBool::new(first_start.is_some())),
            first_start: Arc::new(tokio::sync::Mutex::new(first_start)),
            pool: self.pool,
            master,
            seals: SealMemory::default(),
            probe: Probe::default(),
        })
    }
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Authenticates key rows and the seal; `None` for a handle that only reads.
    master: Option<Arc<MasterKey>>,
    /// The first start's transaction, while it lasts (see [`PgOpening::finish`]).
    first_start: Arc<tokio::sync::Mutex<Option<Transaction<'static, Postgres>>>>,
    /// Whether `first_start` may still hold a transaction (saves the lock afterwards).
    pinned: Arc<AtomicBool>,
    seals: SealMemory,
    probe: Probe,
    /// Whether the database is down, so that what needs it is refused at once.
    outage: Outage,
}

/// The outage guard of a pool: its probe opens a connection of its own (never one of the
/// pool's, which requests are waiting for) with the pool's options.
fn outage_guard(pool: &PgPool) -> Outage {
    let options = Arc::new((*pool.connect_options()).clone());
    let probe: ProbeFn = Arc::new(move || {
        let options = options.clone();
        Box::pin(async move {
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(|e| e.to_string())?;
            let answered = sqlx::query("SELECT 1").execute(&mut conn).await;
            let _ = conn.close().await;
            answered.map(drop).map_err(|e| e.to_string())
        })
    });
    Outage::new(probe)
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    crate::config::DatabaseUrl::new(url.to_owned()).redacted()
}

/// A connection for one operation: from the pool, or the first start's transaction.
enum Conn<'a> {
    Pool(WriteConn<Postgres>),
    First(tokio::sync::MutexGuard<'a, Option<Transaction<'static, Postgres>>>),
}

impl Conn<'_> {
    fn get(&mut self) -> Result<&mut PgConnection, StoreError> {
        match self {
            Conn::Pool(conn) => Ok(&mut conn.conn),
            Conn::First(guard) => guard.as_deref_mut().ok_or_else(|| {
                StoreError::Unavailable("the first start's transaction has ended".into())
            }),
        }
    }

    /// The operation succeeded: a pooled connection may be reused.
    fn done(&mut self) {
        if let Conn::Pool(conn) = self {
            conn.committed();
        }
    }

    /// A read-only transaction over one snapshot (a savepoint during the first start).
    async fn begin_read(&mut self) -> Result<Transaction<'_, Postgres>, StoreError> {
        Ok(match self {
            Conn::Pool(conn) => {
                conn.conn
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
            Conn::First(_) => self.get()?.begin().await?,
        })
    }

    /// A write transaction holding [`WRITE_LOCK`].
    async fn begin_write(&mut self) -> Result<Transaction<'_, Postgres>, StoreError> {
        let mut tx = self.get()?.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl PgStore {
    /// Connects to the database at `url`, takes the write lock and brings the schema up to
    /// date, inside one transaction that [`PgOpening::finish`] ends.
    pub async fn connect(url: &str) -> Result<PgOpening, OpenError> {
        let name = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| OpenError::Url {
            detail: redact_error(&e, url),
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| OpenError::Connect {
                name: name.clone(),
                source,
            })?;
        let migrate_err = |source| OpenError::Migrate {
            name: name.clone(),
            source,
        };
        let mut tx = pool.begin().await.map_err(migrate_err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(migrate_err)?;
        let has_meta: bool = sqlx::query_scalar("SELECT to_regclass('meta') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(migrate_err)?;
        let applied: i64 = if has_meta {
            let version: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT value FROM meta WHERE name = 'schema_version'")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(migrate_err)?;
            version
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| OpenError::Damaged {
                    name: name.clone(),
                    detail: "schema_version is missing".into(),
                })?
        } else {
            0
        };
        let known = MIGRATIONS.len() as i64;
        if applied > known {
            return Err(OpenError::TooNew {
                name,
                found: applied,
                known,
            });
        }
        for script in &MIGRATIONS[applied as usize..] {
            sqlx::raw_sql(script)
                .execute(&mut *tx)
                .await
                .map_err(migrate_err)?;
        }
        if applied < known {
            set_meta_in(&mut tx, "schema_version", known.to_string().as_bytes())
                .await
                .map_err(|e| OpenError::Damaged {
                    name: name.clone(),
                    detail: e.to_string(),
                })?;
        }
        Ok(PgOpening {
            pool,
            tx,
            // Only a database without jwksd's tables is fresh: the schema is only ever
            // committed together with the master-key check and the first keys, so tables
            // without them are an emptied store, which the keyring refuses.
            fresh: !has_meta,
        })
    }

    /// Commits the first start's transaction: the schema, the master-key check, the seal and
    /// the first keys become visible together. Does nothing after the first start.
    pub async fn commit_first_start(&self) -> Result<(), StoreError> {
        let mut guard = self.first_start.lock().await;
        if let Some(tx) = guard.take() {
            self.pinned.store(false, Ordering::SeqCst);
            tx.commit().await?;
        }
        Ok(())
    }

    /// A connection for one operation; refused at once while the database is down (see
    /// [`super::outage`]). Every [`SUSPECT_AFTER`] of waiting starts a probe (unless one
    /// just reached the database), and the wait ends with the refusal as soon as a probe
    /// finds the database down.
    async fn conn(&self) -> Result<Conn<'_>, StoreError> {
        if self.pinned.load(Ordering::SeqCst) {
            let guard = self.first_start.lock().await;
            if guard.is_some() {
                return Ok(Conn::First(guard));
            }
        }
        self.outage.check()?;
        let acquire = WriteConn::acquire(&self.pool);
        tokio::pin!(acquire);
        let acquired = loop {
            tokio::select! {
                acquired = &mut acquire => break acquired,
                refused = self.outage.went_down() => break Err(refused),
                () = tokio::time::sleep(SUSPECT_AFTER) => self.outage.suspect_slow(),
            }
        };
        self.outage.observe(&acquired);
        acquired.map(Conn::Pool)
    }

    /// Runs one operation, noting a failure that looks like a lost database.
    async fn watched<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = operation.await;
        self.outage.observe(&result);
        result
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
        let mut conn = self.conn().await?;
        let mut tx = conn.get()?.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FETCHERS_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM fetcher_kids WHERE (keyset, user_agent, network) IN \
             (SELECT keyset, user_agent, network FROM fetchers WHERE last_seen < $1)",
        )
        .bind(prune_before)
        .execute(&mut *tx)
        .await?;
        written.pruned = sqlx::query("DELETE FROM fetchers WHERE last_seen < $1")
            .bind(prune_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for f in batch {
            let known: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM fetchers WHERE keyset = $1 AND user_agent = $2 AND network = $3",
            )
            .bind(&f.keyset)
            .bind(&f.user_agent)
            .bind(&f.network)
            .fetch_one(&mut *tx)
            .await?;
            if known == 0 {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM fetchers WHERE keyset = $1")
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
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (keyset, user_agent, network) DO UPDATE \
                 SET first_seen = LEAST(fetchers.first_seen, excluded.first_seen), \
                 last_seen = GREATEST(fetchers.last_seen, excluded.last_seen)",
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
                     last_served) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (keyset, user_agent, network, kid) DO UPDATE SET \
                     first_served = LEAST(fetcher_kids.first_served, excluded.first_served), \
                     last_served = GREATEST(fetcher_kids.last_served, excluded.last_served)",
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
        conn.done();
        Ok(written)
    }

    async fn read_fetchers(&self, keyset: &str) -> Result<Vec<Fetcher>, StoreError> {
        let mut conn = self.conn().await?;
        // One snapshot: fetchers and their kids of the same instant.
        let mut tx = conn.begin_read().await?;
        let fetchers = sqlx::query(
            "SELECT keyset, user_agent, network, first_seen, last_seen FROM fetchers \
             WHERE keyset = $1 ORDER BY last_seen DESC, user_agent, network",
        )
        .bind(keyset)
        .fetch_all(&mut *tx)
        .await?;
        let kids = sqlx::query(
            "SELECT user_agent, network, kid, first_served, last_served FROM fetcher_kids \
             WHERE keyset = $1 ORDER BY first_served, kid",
        )
        .bind(keyset)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        conn.done();
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

    async fn write_probe(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        set_meta_in(
            conn.get()?,
            "ready_probe",
            crate::unix_now().to_string().as_bytes(),
        )
        .await?;
        conn.done();
        Ok(())
    }

    async fn apply_change(&self, change: &Change) -> Result<(), StoreError> {
        let master = self.master()?;
        // Every seal written must be newer than the last (see `check_seal`): a key change
        // always leaves its audit records.
        if change.events.is_empty() {
            return Err(StoreError::Conflict(
                "a key change without its audit records is never written".into(),
            ));
        }
        let mut conn = self.conn().await?;
        let mut tx = conn.begin_write().await?;
        let digest = current_digest(&mut *tx).await?;
        check_seal(&mut *tx, master, &digest, &self.seals.known()).await?;
        // Keys leaving `current` go first, so the one-current index holds after each
        // statement.
        let mut transitions: Vec<_> = change.transitions.iter().collect();
        transitions.sort_by_key(|t| t.from != KeyState::Current);
        for t in transitions {
            let row = sqlx::query("SELECT * FROM keys WHERE kid = $1")
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
                "UPDATE keys SET state = $1, published_at = $2, activated_at = $3, \
                 retired_at = $4, remove_at = $5, removed_at = $6, revoked_at = $7, \
                 sealed_private = $8, mac = $9 WHERE kid = $10 AND state = $11",
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
            // Another process may have committed since this change was planned: a key set
            // holds at most one next and one current key, so an insert that would make a
            // second one is a conflict, not a second successor.
            if matches!(r.state, KeyState::Next | KeyState::Current) {
                let taken: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM keys WHERE keyset = $1 AND state = $2)",
                )
                .bind(&r.keyset)
                .bind(r.state.as_str())
                .fetch_one(&mut *tx)
                .await?;
                if taken {
                    return Err(StoreError::Conflict(format!(
                        "key set {} already has a {} key",
                        r.keyset, r.state
                    )));
                }
            }
            sqlx::query(
                "INSERT INTO keys (kid, keyset, alg, state, created_at, published_at, \
                 activated_at, retired_at, remove_at, removed_at, revoked_at, public_jwk, \
                 cert_der, sealed_private, mac) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
        // Delivered to every listener on this database when, and only if, this commits.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(KEY_CHANGES_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        conn.done();
        drop(conn);
        self.seals.remember(seal);
        let erased = change
            .transitions
            .iter()
            .any(|t| !matches!(t.to, KeyState::Next | KeyState::Current));
        if erased && !self.pinned.load(Ordering::SeqCst) {
            self.vacuum_keys().await;
        }
        Ok(())
    }

    /// Starts listening for key changes committed by any process on this database (this
    /// one included): [`KeyChanges::changed`] returns after each. The listener has its own
    /// connection, outside the pool, and reconnects by itself, with a growing pause up to
    /// 10 s; since a notification sent while it is not connected is lost, every (re)connect
    /// counts as a change, so the caller re-reads the store then. A connection that dies
    /// without the operating system noticing (a half-open TCP connection) is not detected
    /// here: the caller's periodic re-read bounds how long a change can go unseen.
    pub fn watch_key_changes(&self) -> KeyChanges {
        let options = (*self.pool.connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let signal = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(listen_for_changes(
            pool,
            signal.clone(),
            self.outage.clone(),
        ));
        KeyChanges { signal, task }
    }

    /// Reclaims the dead row versions that still hold erased private halves. A failure
    /// never undoes or hides the committed change.
    async fn vacuum_keys(&self) {
        if let Err(e) = sqlx::raw_sql("VACUUM keys").execute(&self.pool).await {
            tracing::warn!(error = %e, "VACUUM of the key table after erasing a private half failed; PostgreSQL's autovacuum reclaims it later");
        }
    }

    async fn append_events(&self, events: &[AuditEvent]) -> Result<Vec<i64>, StoreError> {
        let master = self.master()?;
        let mut conn = self.conn().await?;
        let mut tx = conn.begin_write().await?;
        let digest = current_digest(&mut *tx).await?;
        check_seal(&mut *tx, master, &digest, &self.seals.known()).await?;
        let seqs = append_in_tx(&mut tx, events).await?;
        let seal = write_seal(&mut *tx, master, &digest).await?;
        tx.commit().await?;
        conn.done();
        self.seals.remember(seal);
        Ok(seqs)
    }
}

/// Key changes committed to the database, as [`PgStore::watch_key_changes`] hears them.
/// Dropping it stops the listener.
pub struct KeyChanges {
    signal: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyChanges {
    /// Returns once a change was committed (or may have been: a reconnect) since the last
    /// return. Changes that arrive together are reported once.
    pub async fn changed(&self) {
        self.signal.notified().await;
    }
}

impl Drop for KeyChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for KeyChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyChanges").finish_non_exhaustive()
    }
}

/// The listener task: listens on [`KEY_CHANGES_CHANNEL`] and signals each notification,
/// reconnecting for ever.
/// A lost or failed connection makes `outage` probe the database at once, so that requests
/// are refused promptly from the moment the database goes away, even on an idle replica.
async fn listen_for_changes(pool: PgPool, signal: Arc<tokio::sync::Notify>, outage: Outage) {
    let mut pause = Duration::from_millis(250);
    let mut failing = false;
    loop {
        let listened = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.listen(KEY_CHANGES_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listened {
            Ok(mut listener) => {
                if failing {
                    tracing::info!("listening for other replicas' key changes again");
                }
                pause = Duration::from_millis(250);
                // Whatever was committed while nobody listened is read now.
                signal.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => signal.notify_one(),
                        // The connection was lost (it is made again at the next call), and
                        // what was sent in between is lost; the database may be gone.
                        Ok(None) => {
                            outage.suspect();
                            signal.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the listener for other replicas' key changes lost its connection; reconnecting (meanwhile the periodic re-read keeps the keys current)");
                            outage.suspect();
                            failing = true;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot listen for other replicas' key changes; retrying (meanwhile the periodic re-read keeps the keys current)");
                }
                outage.suspect();
                failing = true;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LISTEN_RETRY_MAX);
    }
}

/// An error message with any occurrence of the URL's password taken out.
fn redact_error(e: &sqlx::Error, url: &str) -> String {
    let text = e.to_string();
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        Some(password) if !password.is_empty() => text.replace(&password, "***"),
        _ => text,
    }
}

async fn set_meta_in(conn: &mut PgConnection, name: &str, value: &[u8]) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl SealTables for PgConnection {
    async fn newest_audit(&mut self) -> Result<Option<AuditRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self)
            .await?;
        row.as_ref().map(audit_from_row).transpose()
    }

    async fn audit_hash(&mut self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM audit WHERE seq = $1")
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
        set_meta_in(self, "store_seal", value).await?;
        set_meta_in(self, "store_seal_mac", mac).await
    }

    async fn key_macs(&mut self) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        Ok(sqlx::query_as("SELECT kid, mac FROM keys")
            .fetch_all(&mut *self)
            .await?)
    }
}

/// Appends `events` after the current chain head, inside `tx` (which holds the write lock).
async fn append_in_tx(
    tx: &mut Transaction<'_, Postgres>,
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
             expires_at, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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

fn key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
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

fn audit_from_row(row: &PgRow) -> Result<AuditRecord, StoreError> {
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

impl Store for PgStore {
    fn load_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(self.watched(async move {
            let master = self.master()?;
            // Taken before the snapshot begins: every seal remembered by then was committed
            // by then, so the snapshot holds it or a newer one.
            let known = self.seals.known();
            let mut conn = self.conn().await?;
            let mut tx = conn.begin_read().await?;
            // kid by its bytes (`COLLATE "C"`), as SQLite and the keyring order it, not by the
            // database's locale.
            let rows = sqlx::query(r#"SELECT * FROM keys ORDER BY created_at, kid COLLATE "C""#)
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
            conn.done();
            self.seals.remember(seal);
            Ok(keys)
        }))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(self.watched(async move {
            let result = self.apply_change(change).await;
            self.probe.note_write(&self.seals, &result).await;
            result
        }))
    }

    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> StoreFuture<'a, Vec<i64>> {
        Box::pin(self.watched(async move {
            let result = self.append_events(events).await;
            self.probe.note_write(&self.seals, &result).await;
            result
        }))
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<AuditHead>> {
        Box::pin(self.watched(async move {
            let master = self.master()?;
            let mut conn = self.conn().await?;
            let seal = read_seal(conn.get()?, master).await?;
            conn.done();
            Ok(seal.map(|seal| seal.head))
        }))
    }

    fn authenticate_legacy_rows<'a>(
        &'a self,
        generated: &'a [String],
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, usize> {
        Box::pin(self.watched(async move {
            let master = self.master()?;
            let mut conn = self.conn().await?;
            let mut tx = conn.begin_write().await?;
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
                sqlx::query("UPDATE keys SET mac = $1 WHERE kid = $2")
                    .bind(row_mac(master, &key))
                    .bind(&key.record.kid)
                    .execute(&mut *tx)
                    .await?;
            }
            set_meta_in(&mut tx, check_name, master_check).await?;
            let digest = current_digest(&mut *tx).await?;
            let seal = write_seal(&mut *tx, master, &digest).await?;
            tx.commit().await?;
            conn.done();
            self.seals.remember(seal);
            Ok(rows.len())
        }))
    }

    fn initialise<'a>(
        &'a self,
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.watched(async move {
            let master = self.master()?;
            let mut conn = self.conn().await?;
            let mut tx = conn.begin_write().await?;
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
            sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2)")
                .bind(check_name)
                .bind(master_check)
                .execute(&mut *tx)
                .await?;
            let seal = write_seal(&mut *tx, master, &keys_digest([])).await?;
            tx.commit().await?;
            conn.done();
            self.seals.remember(seal);
            Ok(())
        }))
    }

    fn audit_page<'a>(
        &'a self,
        filter: &'a AuditFilter,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<AuditRecord>> {
        Box::pin(self.watched(async move {
            let mut conn = self.conn().await?;
            let rows = sqlx::query(
                "SELECT * FROM audit WHERE seq > $1 \
                 AND ($2::BIGINT IS NULL OR time >= $2) \
                 AND ($3::TEXT IS NULL OR client_id = $3) \
                 AND ($4::TEXT IS NULL OR caller = $4) \
                 AND ($5::TEXT IS NULL OR kid = $5) \
                 AND ($6::TEXT IS NULL OR event = $6) \
                 ORDER BY seq LIMIT $7",
            )
            .bind(after)
            .bind(filter.since)
            .bind(&filter.client_id)
            .bind(&filter.caller)
            .bind(&filter.kid)
            .bind(&filter.event)
            .bind(i64::from(limit))
            .fetch_all(conn.get()?)
            .await?;
            conn.done();
            rows.iter().map(audit_from_row).collect()
        }))
    }

    fn meta<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.watched(async move {
            let mut conn = self.conn().await?;
            let value = sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
                .bind(name)
                .fetch_optional(conn.get()?)
                .await?;
            conn.done();
            Ok(value)
        }))
    }

    fn set_meta<'a>(&'a self, name: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(self.watched(async move {
            let mut conn = self.conn().await?;
            set_meta_in(conn.get()?, name, value).await?;
            conn.done();
            Ok(())
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.probe.run(self.watched(self.write_probe())))
    }

    fn database_time(&self) -> StoreFuture<'_, Option<UnixTime>> {
        Box::pin(self.watched(async move {
            let mut conn = self.conn().await?;
            // `clock_timestamp()`, not `now()`: the time of this statement, even inside the
            // first start's transaction.
            let time: i64 =
                sqlx::query_scalar("SELECT floor(extract(epoch FROM clock_timestamp()))::BIGINT")
                    .fetch_one(conn.get()?)
                    .await?;
            conn.done();
            Ok(Some(time))
        }))
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
            // An unfinished first start is rolled back, never committed by closing.
            self.first_start.lock().await.take();
            self.pool.close().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            time: 1_700_000_000,
            event: "assertion.issued".into(),
            caller: Some(format!("caller-{n}")),
            client_id: None,
            keyset: None,
            kid: None,
            jti: Some(format!("jti-{n}")),
            audience: None,
            expires_at: None,
            detail: None,
        }
    }

    /// Two handles on one database, as two jwksd processes would hold it, appending at the
    /// same time: one chain, every record in it, and each handle's next load accepts the
    /// other's newer seal. Runs only when `JWKSD_TEST_POSTGRES` names a server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_appending_at_once_keep_one_chain() {
        let Some(url) = crate::store::test_database().await else {
            eprintln!("PostgreSQL only: JWKSD_TEST_POSTGRES is not set");
            return;
        };
        let master = Arc::new(MasterKey::generate().0);
        let first = PgStore::connect(&url).await.unwrap();
        assert!(first.is_fresh());
        let first = first.finish(Some(master.clone())).await.unwrap();
        first
            .initialise("master_key_check", b"check")
            .await
            .unwrap();
        first.commit_first_start().await.unwrap();
        let second = PgStore::connect(&url).await.unwrap();
        assert!(!second.is_fresh());
        let second = second.finish(Some(master.clone())).await.unwrap();
        let (a, b) = (first.clone(), second.clone());
        let one = tokio::spawn(async move {
            for n in 0..40 {
                a.append_audit(&[event(n)]).await.unwrap();
            }
        });
        let two = tokio::spawn(async move {
            for n in 100..140 {
                b.append_audit(&[event(n), event(n + 1000)]).await.unwrap();
            }
        });
        one.await.unwrap();
        two.await.unwrap();
        for store in [&first, &second] {
            store.load_keys().await.unwrap();
            assert_eq!(
                crate::trail::verify_store(store).await.unwrap().unwrap(),
                120
            );
        }
        assert_eq!(second.audit_head().await.unwrap().unwrap().seq, 120);
    }

    #[test]
    fn the_password_never_shows_in_a_redacted_url() {
        let url = "postgres://jwksd:s3cr%2Ft@db.example:5432/keys?sslmode=verify-full";
        let shown = redact_url(url);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("sslmode=verify-full"), "{shown}");
        let shown = redact_url("postgres://db.example/keys?password=hunter2&sslmode=require");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
