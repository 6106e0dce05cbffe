//! Storage faults on real filesystems: a full disk (a small tmpfs under the data directory),
//! and the modes of every file the store and `jwksd backup` create.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, TestApp, EC_DEFAULT};
use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};

/// A tmpfs mounted for one test, unmounted when dropped (also when the test panics).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts `size` (mount(8) syntax, e.g. `16m`) at `path`. Fails the test, never skips it,
    /// when the mount is impossible: a full disk is only tested on a real filesystem.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8) for the full-disk test: {e}"));
        assert!(
            output.status.success(),
            "cannot mount a {size} tmpfs at {} for the full-disk test (it needs root; it does \
             not skip): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a panicking test may still hold the store open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

const ENOSPC: i32 = 28;

/// How long a store may take to work again once the disk has room: well above the
/// readiness probe's 1 s cache, far below any backoff worth having.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);

/// Writes to `filler` until the filesystem has no byte left; returns how much it added.
fn fill(filler: &Path) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .unwrap();
    let mut written = 0u64;
    let mut chunk = 1 << 20;
    while chunk > 0 {
        match file.write(&vec![0xa5; chunk]) {
            Ok(0) => chunk /= 2,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(ENOSPC) => chunk /= 2,
            Err(e) => panic!("filling {}: {e}", filler.display()),
        }
    }
    written
}

/// Fills the disk so that the next write must fail. A failed write leaves its WAL frames
/// allocated, and SQLite reuses a WAL from its start after a checkpoint, so on a merely
/// full disk a later write may still fit inside the WAL file; and jwksd itself truncates
/// the WAL after some commits, which hands space back. So first the test's own connection
/// merges and truncates the WAL (with the filler gone, so the merge has room), then the
/// filler takes every byte: whatever jwksd writes next needs new space.
async fn fill_leaving_no_room_in_the_wal(db: &Path, filler: &Path) {
    let _ = std::fs::remove_file(filler);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mut truncated = false;
    for _ in 0..200 {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&pool)
            .await
            .unwrap();
        if busy == 0 {
            truncated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    pool.close().await;
    assert!(
        truncated,
        "a reader kept the WAL from being truncated for 5 s"
    );
    fill(filler);
}

async fn sign(app: &TestApp) -> reqwest::Response {
    request_assertion(app, BILLING_TOKEN, json!({"client_id": "ecw"})).await
}

/// What must not change while the disk is full: key rows and audit records.
async fn store_state(app: &TestApp) -> (Vec<Value>, Vec<Value>, Value) {
    let audit: Value = app
        .admin(reqwest::Method::GET, "/admin/v1/audit?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        app.keys("default").await,
        audit["records"].as_array().unwrap().clone(),
        app.jwks("default").await,
    )
}

/// A storage refusal: 503, problem+json, `Retry-After`, the storage problem type.
async fn assert_storage_unavailable(response: reqwest::Response, what: &str) -> Value {
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = response.text().await.unwrap();
    assert_eq!(status, 503, "{what} under a full disk: {body}");
    assert!(retry_after.is_some(), "{what}: no Retry-After");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        problem["type"], "urn:jwksd:problem:storage-unavailable",
        "{what}: {problem}"
    );
    // The cause is only in the log, under the id the answer carries.
    assert!(
        problem["error_id"]
            .as_str()
            .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "{what}: no error_id in {problem}"
    );
    problem
}

#[tokio::test]
async fn after_a_full_disk_signing_recovers_without_a_restart() {
    if crate::helpers::sqlite_only("a full tmpfs under the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "16m");
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    assert_eq!(sign(&app).await.status(), 200);
    assert_eq!(app.get_public("/readyz").await.status(), 200);
    let next = app.kid_in_state("default", "next").await.unwrap();

    // Fill the disk, then sign until a write really fails: the WAL may still have room.
    let before = store_state(&app).await;
    let filler = data.join("filler");
    let mut refused = None;
    let mut issued_on_a_full_disk = 0;
    for _ in 0..50 {
        fill(&filler);
        let response = sign(&app).await;
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
        issued_on_a_full_disk += 1;
    }
    let refused = refused.expect("no signing failed on a full disk");
    let problem = assert_storage_unavailable(refused, "signing").await;
    assert!(problem.get("client_assertion").is_none());

    // A failed write leaves its half-written WAL frames allocated, and a later, smaller write
    // can fit in them: on a full disk some writes still succeed. So before each attempt, top
    // the disk up and sign until one is refused; what was answered 200 is counted (and must
    // be in the audit trail), what was refused must be a storage problem.
    async fn exhaust(app: &TestApp, filler: &Path, issued: &mut usize) {
        for _ in 0..50 {
            fill(filler);
            let response = sign(app).await;
            if response.status() == 200 {
                *issued += 1;
            } else {
                assert_storage_unavailable(response, "signing").await;
                return;
            }
        }
        panic!("signing kept succeeding on a full disk");
    }
    for _ in 0..3 {
        exhaust(&app, &filler, &mut issued_on_a_full_disk).await;
    }
    // From here on each refusal must be certain, so the WAL is left no room either.
    let db = data.join("jwksd.db");
    fill_leaving_no_room_in_the_wal(&db, &filler).await;
    assert_storage_unavailable(sign(&app).await, "signing").await;
    fill_leaving_no_room_in_the_wal(&db, &filler).await;
    assert_storage_unavailable(app.rotate("default", true).await, "rotation").await;
    fill_leaving_no_room_in_the_wal(&db, &filler).await;
    assert_storage_unavailable(app.revoke(&next).await, "revocation").await;
    // Past the probe's cache, readiness must see that the store cannot commit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fill_leaving_no_room_in_the_wal(&db, &filler).await;
    assert_problem(app.get_public("/readyz").await, 503).await;

    // Space comes back: every signing works again, without a restart. The probe's cache
    // makes it about 1 s; the bound leaves room for a busy machine, not for a backoff.
    std::fs::remove_file(&filler).unwrap();
    let back = Instant::now();
    while app.get_public("/readyz").await.status() != 200 {
        assert!(
            back.elapsed() < RECOVERY_BOUND,
            "not ready {RECOVERY_BOUND:?} after space came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing the full disk refused was written: the keys are as before, and the audit
    // trail holds exactly the assertions that were answered 200.
    let after = store_state(&app).await;
    assert_eq!(after.0, before.0, "a refused change changed the keys");
    assert_eq!(after.2, before.2, "a refused change changed the JWKS");
    let added = &after.1[before.1.len()..];
    assert_eq!(added.len(), issued_on_a_full_disk, "{added:?}");
    assert!(added.iter().all(|r| r["event"] == "assertion.issued"));
    for i in 0..5 {
        let response = sign(&app).await;
        let status = response.status();
        assert_eq!(
            status,
            200,
            "signing {} of 5 after space came back: {}",
            i + 1,
            response.text().await.unwrap()
        );
    }
    assert!(
        back.elapsed() < RECOVERY_BOUND,
        "recovery took {:?}",
        back.elapsed()
    );
    eprintln!(
        "ready and 5 of 5 signings answered 200 {:?} after space came back",
        back.elapsed()
    );
    assert_eq!(app.rotate("default", true).await.status(), 200);
    assert_eq!(app.kid_in_state("default", "current").await, Some(next));
    assert_eq!(sign(&app).await.status(), 200);
    let chain = jwksd::trail::verify_store(app.keyring.store().as_ref())
        .await
        .unwrap();
    assert!(chain.is_ok(), "{chain:?}");
    app.stop().await;
}

/// The permission bits of `path`, in octal.
fn mode(path: &Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

fn assert_store_files_private(data: &Path, when: &str) {
    for file in ["jwksd.db", "jwksd.db-wal", "jwksd.db-shm"] {
        assert_eq!(mode(&data.join(file)), "600", "{file} {when}");
    }
}

#[tokio::test]
async fn store_files_are_owner_only_in_a_world_readable_data_dir() {
    if crate::helpers::sqlite_only("modes of the SQLite files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    assert_store_files_private(&data, "after start");
    for _ in 0..5 {
        assert_eq!(sign(&app).await.status(), 200);
    }
    assert_eq!(app.rotate("default", true).await.status(), 200);
    assert_store_files_private(&data, "after signing and a rotation");
    app.stop().await;
}

#[tokio::test]
async fn a_store_copied_world_readable_is_made_owner_only_at_start() {
    if crate::helpers::sqlite_only("modes of the SQLite files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let jwks = app.jwks("default").await;
    app.stop().await;
    // A restore with `cp`, or a store of an older version: the files are 0644.
    for file in ["jwksd.db", "jwksd.db-wal", "jwksd.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_store_files_private(&data, "after a start on 0644 files");
    assert_eq!(app.jwks("default").await, jwks);
    app.stop().await;
}

fn backup(data: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["backup", "--out"])
        .arg(out)
        .env("JWKSD_SERVER__DATA_DIR", data)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_backup_is_owner_only_and_never_replaces_or_follows_a_file() {
    if crate::helpers::sqlite_only("jwksd backup writes SQLite files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;

    let out = dir.path().join("backup.db");
    let done = backup(&data, &out);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(mode(&out), "600", "the backup file");
    let copy = std::fs::read(&out).unwrap();
    assert!(copy.starts_with(b"SQLite format 3\0"), "not a database");

    let existing = dir.path().join("existing.db");
    std::fs::write(&existing, b"keep me").unwrap();
    let refused = backup(&data, &existing);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "overwrote an existing file");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let target = dir.path().join("elsewhere.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let refused = backup(&data, &link);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "wrote through a dangling symlink"
    );
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(!target.exists(), "created the symlink's target");
    app.stop().await;
}
