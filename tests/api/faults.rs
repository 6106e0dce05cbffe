//! Storage faults on real filesystems: the modes of every file the store and `jwksd backup`
//! create.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};
use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};

async fn sign(app: &TestApp) -> reqwest::Response {
    request_assertion(app, BILLING_TOKEN, json!({"client_id": "ecw"})).await
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test panics).
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = spawn_app_with(dir.path(), "").await;
    let jwks = app.jwks("default").await;
    app.stop().await;
    // A restore with `cp`, or a store of an older version: the files are 0644.
    for file in ["jwksd.db", "jwksd.db-wal", "jwksd.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let app = spawn_app_with(dir.path(), "").await;
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = spawn_app_with(dir.path(), "").await;

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
