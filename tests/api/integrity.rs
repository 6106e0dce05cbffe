//! The store must never publish a wrong key: rows written without the master key are
//! refused, the audit trail is checked at start, and a fault after a commit never leaves
//! memory and disk disagreeing. Each test here was seen failing before its fix.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jwksd::audit::{AuditEvent, AuditFilter, AuditRecord};
use jwksd::keyring::Keyring;
use jwksd::keys::{Algorithm, KeyMaterial, MasterKey, RsaBits};
use jwksd::store::sqlite::SqliteStore;
use jwksd::store::{AuditHead, Change, Store, StoreError, StoreFuture, StoreSeal, StoredKey};

use crate::helpers::{spawn_app_unscheduled, spawn_app_with, test_config, EC_DEFAULT};
use crate::startup::{initialise, refusal, tamper};

const FAR_FUTURE: i64 = 4_102_444_800; // 2100-01-01

/// The store of a test, opened directly, as someone with write access to the database would:
/// the SQLite file, or the test's PostgreSQL database. The tampering below is written once,
/// with `$N` placeholders (which both read), and runs on whichever backend the run uses, so
/// every refusal here is shown on both.
enum Direct {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$pool` bound to the pool of `$db` (a `&Direct`), whichever it is.
macro_rules! direct {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Direct::Sqlite($pool) => $body,
            Direct::Postgres($pool) => $body,
        }
    };
}

impl Direct {
    async fn open(dir: &Path) -> Direct {
        if let Some(url) = crate::helpers::database_url(dir) {
            return Direct::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
        }
        let db = dir.join("data/jwksd.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        Direct::Sqlite(pool)
    }

    async fn close(self) {
        direct!(self, pool => pool.close().await)
    }
}

/// `jwksd audit verify` on the data directory of `dir`: (succeeded, output).
fn audit_verify(dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["audit", "verify"])
        .env(
            "JWKSD_SERVER__DATA_DIR",
            dir.join("data").display().to_string(),
        )
        .envs(crate::helpers::backend_env(dir))
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// After tampering, jwksd must refuse to start, saying a row is not authentic, and `audit
/// verify` must not call the store intact.
async fn assert_tampering_refused(dir: &Path, toml: &str) {
    let message = refusal(dir, toml).await;
    assert!(message.contains("valid MAC"), "{message}");
    assert!(message.contains("Restore it from a backup"), "{message}");
    let (ok, output) = audit_verify(dir);
    assert!(!ok, "audit verify called a tampered store intact: {output}");
}

/// An attacker's own key, with its correct thumbprint kid, inserted as a retired key that
/// stays published for decades.
#[tokio::test]
async fn an_inserted_key_row_is_never_published() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    let key = KeyMaterial::generate(Algorithm::Es256, RsaBits::B2048).unwrap();
    let public = key.public_jwk();
    let kid = public.thumbprint();
    let cert = jwksd::keys::cert::self_signed(&key, "CN=default", time::OffsetDateTime::now_utc())
        .unwrap();
    let db = Direct::open(dir.path()).await;
    direct!(&db, pool => {
    sqlx::query(
        "INSERT INTO keys (kid, keyset, alg, state, created_at, published_at, activated_at, \
         retired_at, remove_at, public_jwk, cert_der) \
         VALUES ($1, 'default', 'ES256', 'retired', 1, 1, 1, 2, $2, $3, $4)",
    )
    .bind(&kid)
    .bind(FAR_FUTURE)
    .bind(public.to_stored_json())
    .bind(cert)
    .execute(pool)
    .await
    .unwrap();
    });
    db.close().await;
    assert_tampering_refused(dir.path(), EC_DEFAULT).await;
}

#[tokio::test]
async fn a_swapped_certificate_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    tamper(
        dir.path(),
        &[
            "UPDATE keys SET cert_der = (SELECT cert_der FROM keys WHERE state = 'next') \
           WHERE state = 'current'",
        ],
    )
    .await;
    assert_tampering_refused(dir.path(), EC_DEFAULT).await;
}

#[tokio::test]
async fn a_revoked_key_edited_back_to_retired_is_not_republished() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let next = app.kid_in_state("default", "next").await.unwrap();
    assert_eq!(app.revoke(&next).await.status(), 200);
    app.stop().await;
    tamper(
        dir.path(),
        &[&format!(
            "UPDATE keys SET state = 'retired', remove_at = {FAR_FUTURE} WHERE state = 'revoked'"
        )],
    )
    .await;
    assert_tampering_refused(dir.path(), EC_DEFAULT).await;
}

#[tokio::test]
async fn a_longer_remove_at_cannot_keep_a_retired_key_published() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    app.stop().await;
    tamper(
        dir.path(),
        &[&format!(
            "UPDATE keys SET remove_at = {FAR_FUTURE} WHERE state = 'retired'"
        )],
    )
    .await;
    assert_tampering_refused(dir.path(), EC_DEFAULT).await;
}

#[tokio::test]
async fn a_key_moved_to_another_key_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[keysets.default]\nalg = \"ES256\"\n[keysets.epic]\nalg = \"ES256\"\n";
    let app = spawn_app_with(dir.path(), toml).await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    app.stop().await;
    tamper(
        dir.path(),
        &["UPDATE keys SET keyset = 'epic' WHERE state = 'retired'"],
    )
    .await;
    assert_tampering_refused(dir.path(), toml).await;
}

#[tokio::test]
async fn two_current_keys_are_refused_even_without_the_index() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    tamper(
        dir.path(),
        &[
            "DROP INDEX keys_one_current_per_keyset",
            "UPDATE keys SET state = 'current', activated_at = 5 WHERE state = 'next'",
        ],
    )
    .await;
    assert_tampering_refused(dir.path(), EC_DEFAULT).await;
}

/// The newest records and the recorded head deleted together.
#[tokio::test]
async fn deleting_the_newest_audit_records_and_the_head_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    app.stop().await;
    tamper(
        dir.path(),
        &[
            "DELETE FROM audit WHERE seq > (SELECT max(seq) - 3 FROM audit)",
            // The head is recorded in the store's seal.
            "DELETE FROM meta WHERE name LIKE 'store_seal%'",
        ],
    )
    .await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("audit trail"), "{message}");
    let (ok, output) = audit_verify(dir.path());
    assert!(!ok, "{output}");
}

/// The seal rewritten to match a shortened chain: only its MAC can tell.
#[tokio::test]
async fn a_rewritten_seal_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    app.stop().await;
    let db = Direct::open(dir.path()).await;
    direct!(&db, pool => {
    let seal: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE name = 'store_seal'")
        .fetch_one(pool)
        .await
        .unwrap();
    let seal = StoreSeal::from_bytes(&seal).unwrap();
    sqlx::query("DELETE FROM audit WHERE seq > (SELECT max(seq) - 3 FROM audit)")
        .execute(pool)
        .await
        .unwrap();
    let (seq, hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_one(pool)
            .await
            .unwrap();
    let rewritten = StoreSeal {
        head: AuditHead { seq, hash },
        keys_digest: seal.keys_digest,
    };
    sqlx::query("UPDATE meta SET value = $1 WHERE name = 'store_seal'")
        .bind(rewritten.to_bytes())
        .execute(pool)
        .await
        .unwrap();
    });
    db.close().await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("valid MAC"), "{message}");
    let (ok, output) = audit_verify(dir.path());
    assert!(!ok, "{output}");
}

/// An edited record in the middle of the chain is found at start, not only by `audit verify`.
#[tokio::test]
async fn an_edited_audit_record_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    tamper(
        dir.path(),
        &["UPDATE audit SET caller = 'someone-else' WHERE seq = 1"],
    )
    .await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("audit trail is broken"), "{message}");
    assert!(message.contains("record 1"), "{message}");
}

/// A store of the format before rows carried MACs is authenticated only when the operator
/// says so (its rows cannot be told from rows someone added, and a check put back from an
/// old backup must not make jwksd seal an attacker's row), and then held to the MACs.
#[tokio::test]
async fn a_store_from_before_row_macs_is_upgraded_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let before = initialise(dir.path(), EC_DEFAULT).await;
    // What an older jwksd left: no MACs, no seal, and the v1 master-key check.
    let master =
        MasterKey::from_text(&std::fs::read_to_string(dir.path().join("data/master.key")).unwrap())
            .unwrap();
    let v1 = master.seal(b"jwksd master key check", b"jwksd/master-key-check/v1");
    let db = Direct::open(dir.path()).await;
    direct!(&db, pool => {
    sqlx::query("UPDATE keys SET mac = NULL")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM meta WHERE name LIKE 'store_seal%'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE meta SET value = $1 WHERE name = 'master_key_check'")
        .bind(v1)
        .execute(pool)
        .await
        .unwrap();
    });
    db.close().await;
    let (ok, output) = audit_verify(dir.path());
    assert!(ok && output.contains("--upgrade-store"), "{output}");
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("--upgrade-store"), "{message}");
    let mut config = test_config(dir.path(), EC_DEFAULT).unwrap();
    config.server.upgrade_store = true;
    let app = crate::helpers::into_test_app(jwksd::app::Application::build(config).await.unwrap());
    assert_eq!(app.jwks("default").await, before);
    app.stop().await;
    // The upgrade happened once: a row without a MAC now is refused.
    tamper(
        dir.path(),
        &["UPDATE keys SET mac = NULL WHERE state = 'next'"],
    )
    .await;
    assert_tampering_refused(dir.path(), EC_DEFAULT).await;
}

/// Copies the `keys` rows of the store in `dir` as they are now, to put back later.
async fn snapshot_rows(dir: &Path) -> Vec<(String, String, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let db = Direct::open(dir).await;
    let rows = direct!(&db, pool => {
        sqlx::query_as("SELECT kid, state, sealed_private, mac FROM keys")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    db.close().await;
    rows
}

/// A revoked key's row replaced by its own older, authentic copy (from when it was retired
/// and still published): that row's MAC is valid, but the set of rows is not the one jwksd
/// last wrote.
#[tokio::test]
async fn an_older_copy_of_a_row_cannot_bring_a_revoked_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let first = app.kid_in_state("default", "current").await.unwrap();
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let old = snapshot_rows(dir.path()).await;
    assert_eq!(app.revoke(&first).await.status(), 200);
    app.stop().await;
    let (_, state, _, mac) = old.into_iter().find(|r| r.0 == first).unwrap();
    assert_eq!(state, "retired");
    let db = Direct::open(dir.path()).await;
    direct!(&db, pool => {
    sqlx::query("UPDATE keys SET state = 'retired', revoked_at = NULL, mac = $1 WHERE kid = $2")
        .bind(mac)
        .bind(&first)
        .execute(pool)
        .await
        .unwrap();
    });
    db.close().await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("older copy"), "{message}");
}

/// While jwksd runs, someone deletes the newest audit records: the next write must not seal
/// the shortened chain as if it were authentic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_audit_tail_is_never_resealed_while_running() {
    use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    for _ in 0..3 {
        let r =
            request_assertion(&app, BILLING_TOKEN, serde_json::json!({"client_id": "ecw"})).await;
        assert_eq!(r.status(), 200);
    }
    tamper(
        dir.path(),
        &["DELETE FROM audit WHERE seq > (SELECT max(seq) - 2 FROM audit)"],
    )
    .await;
    let refused =
        request_assertion(&app, BILLING_TOKEN, serde_json::json!({"client_id": "ecw"})).await;
    let status = refused.status();
    assert_eq!(status, 503, "{}", refused.text().await.unwrap());
    assert_eq!(app.rotate("default", true).await.status(), 503);
    app.stop().await;
    let message = refusal(dir.path(), &signing_config("")).await;
    assert!(message.contains("audit trail"), "{message}");
}

/// A store that delegates to SQLite, with faults a test switches on.
struct FaultyStore {
    inner: SqliteStore,
    /// `apply` fails for changes whose audit records name this key set.
    fail_apply_for: Mutex<Option<String>>,
    /// `load_keys` fails once any change was applied.
    fail_loads_after_apply: AtomicBool,
    applied: AtomicBool,
}

fn injected() -> StoreError {
    StoreError::Corrupt("injected fault".into())
}

impl Store for FaultyStore {
    fn load_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            if self.fail_loads_after_apply.load(Ordering::SeqCst)
                && self.applied.load(Ordering::SeqCst)
            {
                return Err(injected());
            }
            self.inner.load_keys().await
        })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let failing = self.fail_apply_for.lock().unwrap().clone();
            if let Some(keyset) = failing {
                if change
                    .events
                    .iter()
                    .any(|e| e.keyset.as_deref() == Some(keyset.as_str()))
                {
                    return Err(injected());
                }
            }
            self.inner.apply(change).await?;
            self.applied.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> StoreFuture<'a, Vec<i64>> {
        self.inner.append_audit(events)
    }

    fn audit_page<'a>(
        &'a self,
        filter: &'a AuditFilter,
        after: i64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<AuditRecord>> {
        self.inner.audit_page(filter, after, limit)
    }

    fn audit_head(&self) -> StoreFuture<'_, Option<AuditHead>> {
        self.inner.audit_head()
    }

    fn authenticate_legacy_rows<'a>(
        &'a self,
        generated: &'a [String],
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, usize> {
        self.inner
            .authenticate_legacy_rows(generated, check_name, master_check)
    }

    fn initialise<'a>(
        &'a self,
        check_name: &'a str,
        master_check: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        self.inner.initialise(check_name, master_check)
    }

    fn meta<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.inner.meta(name)
    }

    fn set_meta<'a>(&'a self, name: &'a str, value: &'a [u8]) -> StoreFuture<'a, ()> {
        self.inner.set_meta(name, value)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }

    fn record_fetchers<'a>(
        &'a self,
        batch: &'a [jwksd::store::Fetcher],
        cap: usize,
        prune_before: i64,
    ) -> StoreFuture<'a, jwksd::store::FetchersWritten> {
        self.inner.record_fetchers(batch, cap, prune_before)
    }

    fn fetchers<'a>(&'a self, keyset: &'a str) -> StoreFuture<'a, Vec<jwksd::store::Fetcher>> {
        self.inner.fetchers(keyset)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
}

/// A keyring on a fresh store in `dir`, through a [`FaultyStore`] with no fault switched on.
async fn faulty_keyring(
    dir: &Path,
    toml: &str,
    master: &Arc<MasterKey>,
) -> (Arc<FaultyStore>, Keyring) {
    let config = test_config(dir, toml).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let inner = SqliteStore::open(&dir.join("data/jwksd.db"), true, Some(master.clone()))
        .await
        .unwrap();
    let store = Arc::new(FaultyStore {
        inner,
        fail_apply_for: Mutex::new(None),
        fail_loads_after_apply: AtomicBool::new(false),
        applied: AtomicBool::new(false),
    });
    let keyring = Keyring::open(
        store.clone(),
        master.clone(),
        config.keysets.clone(),
        true,
        false,
        jwksd::unix_now(),
    )
    .await
    .unwrap();
    (store, keyring)
}

fn signer_kid(keyring: &Keyring, keyset: &str) -> Option<String> {
    keyring.snapshot().keysets[keyset]
        .signer
        .as_ref()
        .map(|s| s.kid.clone())
}

/// A revocation whose commit succeeded must take effect in memory even if reading the store
/// back fails: the revoked key never signs again, and the caller is not told "nothing was
/// changed".
#[tokio::test]
async fn a_committed_revocation_takes_effect_even_when_reading_back_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _) = MasterKey::generate();
    let master = Arc::new(master);
    let (store, keyring) = faulty_keyring(dir.path(), EC_DEFAULT, &master).await;
    let current = signer_kid(&keyring, "default").unwrap();
    store.applied.store(false, Ordering::SeqCst);
    store.fail_loads_after_apply.store(true, Ordering::SeqCst);
    let outcome = keyring.revoke(&current, None, jwksd::unix_now()).await;
    assert!(
        outcome.is_ok(),
        "the committed revocation was reported as failed: {outcome:?}"
    );
    assert_ne!(
        signer_kid(&keyring, "default").as_deref(),
        Some(current.as_str())
    );
    let jwks: serde_json::Value =
        serde_json::from_slice(&keyring.snapshot().keysets["default"].jwks.body).unwrap();
    assert!(
        !jwks.to_string().contains(&current),
        "the revoked key is still published"
    );
}

/// Another writer (a second replica, an operator's second process) changed the key set: the
/// scheduler plans from what the store holds, not from a stale snapshot, so it does not hit
/// a conflict for ever.
#[tokio::test]
async fn the_scheduler_recovers_from_a_change_made_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _) = MasterKey::generate();
    let master = Arc::new(master);
    let (store, keyring) = faulty_keyring(dir.path(), EC_DEFAULT, &master).await;
    let config = test_config(dir.path(), EC_DEFAULT).unwrap();
    let other = Keyring::open(
        store.clone(),
        master.clone(),
        config.keysets,
        false,
        false,
        jwksd::unix_now(),
    )
    .await
    .unwrap();
    other
        .rotate("default", true, jwksd::unix_now())
        .await
        .unwrap();
    let rotated_to = signer_kid(&other, "default");
    // 91 days on, the first keyring's stale view wants to promote a key that already is current.
    let later = jwksd::unix_now() + 91 * 86_400;
    keyring.tick(later).await.unwrap();
    keyring.tick(later + 1).await.unwrap();
    let records = &keyring.snapshot().keysets["default"].records;
    assert_eq!(
        records
            .iter()
            .filter(|r| r.state == jwksd::rotation::KeyState::Current)
            .count(),
        1
    );
    assert_ne!(
        signer_kid(&keyring, "default"),
        rotated_to,
        "the due rotation happened"
    );
}

/// One key set whose scheduled step fails does not stop the schedule of the others.
#[tokio::test]
async fn a_failing_key_set_does_not_stop_the_schedule_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _) = MasterKey::generate();
    let master = Arc::new(master);
    let toml = "[keysets.aaa]\nalg = \"ES256\"\n[keysets.zzz]\nalg = \"ES256\"\n";
    let (store, keyring) = faulty_keyring(dir.path(), toml, &master).await;
    let (aaa, zzz) = (signer_kid(&keyring, "aaa"), signer_kid(&keyring, "zzz"));
    *store.fail_apply_for.lock().unwrap() = Some("aaa".into());
    let later = jwksd::unix_now() + 91 * 86_400;
    let next = keyring.tick(later).await;
    assert!(next.is_ok(), "{next:?}");
    assert_eq!(
        signer_kid(&keyring, "aaa"),
        aaa,
        "the failing key set did not change"
    );
    assert_ne!(
        signer_kid(&keyring, "zzz"),
        zzz,
        "the healthy key set rotated"
    );
    // It is retried soon, not after the full schedule.
    assert!(next.unwrap().is_some_and(|at| at <= later + 30));
}

/// A reader holding the WAL keeps the checkpoint that erases a retired private half from
/// finishing; it is retried after the next write instead of being forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_private_halves_leave_the_wal_once_a_reader_lets_go() {
    if crate::helpers::sqlite_only("the SQLite WAL") {
        return;
    }
    use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let db = dir.path().join("data/jwksd.db");
    let wal = dir.path().join("data/jwksd.db-wal");
    let reader = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mut held = reader.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *held).await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM keys")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    assert_eq!(app.rotate("default", true).await.status(), 200);
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the reader should have kept the WAL"
    );
    sqlx::query("COMMIT").execute(&mut *held).await.unwrap();
    drop(held);
    reader.close().await;
    let response = request_assertion(
        &app,
        BILLING_TOKEN,
        serde_json::json!({ "client_id": "ecw" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        0,
        "the WAL still holds pages from before the private half was erased"
    );
    app.stop().await;
}

/// A store wiped of its keys, audit trail and seal is never re-keyed: at start it is
/// refused, and while running the scheduler refuses to plan from it.
#[tokio::test]
async fn a_wiped_store_is_refused_not_rekeyed() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_unscheduled(dir.path(), EC_DEFAULT).await;
    let served = app.jwks("default").await;
    let wipe = [
        "DELETE FROM keys",
        "DELETE FROM audit",
        "DELETE FROM meta WHERE name LIKE 'store_seal%'",
    ];
    tamper(dir.path(), &wipe).await;
    let tick = app.keyring.tick(jwksd::unix_now()).await;
    assert!(tick.is_err(), "the scheduler planned from a wiped store");
    assert_eq!(
        app.jwks("default").await,
        served,
        "the verified keys keep serving"
    );
    app.stop().await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("seal"), "{message}");
}

/// While jwksd runs, an older seal put back with the records after it deleted is refused:
/// it verifies, but it is not the seal this process last wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_seal_put_back_while_running_is_refused() {
    use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let db = Direct::open(dir.path()).await;
    direct!(&db, pool => {
    let old: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, value FROM meta WHERE name LIKE 'store_seal%'")
            .fetch_all(pool)
            .await
            .unwrap();
    let old_end: i64 = sqlx::query_scalar("SELECT max(seq) FROM audit")
        .fetch_one(pool)
        .await
        .unwrap();
    for _ in 0..3 {
        let r =
            request_assertion(&app, BILLING_TOKEN, serde_json::json!({"client_id": "ecw"})).await;
        assert_eq!(r.status(), 200);
    }
    sqlx::query("DELETE FROM audit WHERE seq > $1")
        .bind(old_end)
        .execute(pool)
        .await
        .unwrap();
    for (name, value) in old {
        sqlx::query("UPDATE meta SET value = $1 WHERE name = $2")
            .bind(value)
            .bind(name)
            .execute(pool)
            .await
            .unwrap();
    }
    });
    db.close().await;
    let refused =
        request_assertion(&app, BILLING_TOKEN, serde_json::json!({"client_id": "ecw"})).await;
    assert_eq!(refused.status(), 503);
    app.stop().await;
}

/// The newest audit record edited while jwksd runs is not chained on and sealed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_newest_audit_record_is_refused_while_running() {
    use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let r = request_assertion(&app, BILLING_TOKEN, serde_json::json!({"client_id": "ecw"})).await;
    assert_eq!(r.status(), 200);
    tamper(
        dir.path(),
        &["UPDATE audit SET audience = 'https://evil.example' WHERE seq = (SELECT max(seq) FROM audit)"],
    )
    .await;
    let refused =
        request_assertion(&app, BILLING_TOKEN, serde_json::json!({"client_id": "ecw"})).await;
    assert_eq!(refused.status(), 503);
    app.stop().await;
}

/// `--upgrade-store` never authenticates a store that was already sealed (an old v1
/// master-key check put back), and is refused on an authenticated store.
#[tokio::test]
async fn the_upgrade_flag_cannot_reseal_an_authenticated_store() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    let build = |dir: &Path| {
        let mut config = test_config(dir, EC_DEFAULT).unwrap();
        config.server.upgrade_store = true;
        jwksd::app::Application::build(config)
    };
    let message = match build(dir.path()).await {
        Ok(_) => panic!("started with --upgrade-store on an authenticated store"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("already authenticated"), "{message}");
    let master =
        MasterKey::from_text(&std::fs::read_to_string(dir.path().join("data/master.key")).unwrap())
            .unwrap();
    let v1 = master.seal(b"jwksd master key check", b"jwksd/master-key-check/v1");
    let db = Direct::open(dir.path()).await;
    direct!(&db, pool => {
    sqlx::query("UPDATE meta SET value = $1 WHERE name = 'master_key_check'")
        .bind(v1)
        .execute(pool)
        .await
        .unwrap();
    });
    db.close().await;
    let message = match build(dir.path()).await {
        Ok(_) => panic!("an old master-key check made jwksd upgrade a sealed store"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("already sealed"), "{message}");
}
