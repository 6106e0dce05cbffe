//! Start-up: a fresh data directory initialises; anything that suggests keys existed
//! before and cannot be used refuses to start, with a message that says what to do.

use crate::helpers::{spawn_app_with, test_config, try_build, EC_DEFAULT};

pub async fn refusal(dir: &std::path::Path, toml: &str) -> String {
    match try_build(dir, toml).await {
        Ok(_) => panic!("jwksd started although it should have refused"),
        Err(e) => e.to_string(),
    }
}

/// Runs `statements` directly against the store of `dir`, as someone with write access to
/// the database would (the SQLite file, or the test's PostgreSQL database).
pub async fn tamper(dir: &std::path::Path, statements: &[&str]) {
    crate::helpers::run_sql(dir, statements).await;
}

/// Runs one app on `toml` to create a store, and returns its JWKS for later comparison.
pub async fn initialise(dir: &std::path::Path, toml: &str) -> serde_json::Value {
    let app = spawn_app_with(dir, toml).await;
    let jwks = app.jwks("default").await;
    app.stop().await;
    jwks
}

#[tokio::test]
async fn a_fresh_data_dir_initialises_with_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = initialise(dir.path(), EC_DEFAULT).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let data = dir.path().join("data");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["master.key", "admin.token"] {
            let mode = std::fs::metadata(data.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[tokio::test]
async fn a_deleted_store_beside_an_existing_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    crate::helpers::delete_store(dir.path()).await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("found the master key"), "{message}");
    assert!(
        message.contains("Restore the store from a backup"),
        "{message}"
    );
    assert!(
        !crate::helpers::store_exists(dir.path()).await,
        "no new store was created"
    );
}

#[tokio::test]
async fn a_store_without_its_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    std::fs::remove_file(dir.path().join("data/master.key")).unwrap();
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(
        message.contains("master key") && message.contains("missing"),
        "{message}"
    );
    assert!(
        !dir.path().join("data/master.key").exists(),
        "no new master key was made"
    );
}

#[tokio::test]
async fn a_wrong_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    std::fs::write(dir.path().join("data/master.key"), "11".repeat(32)).unwrap();
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("different master key"), "{message}");
}

#[tokio::test]
async fn a_corrupted_store_refuses_to_start() {
    if crate::helpers::sqlite_only("a SQLite file with its header overwritten") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    let db = dir.path().join("data/jwksd.db");
    let _ = std::fs::remove_file(dir.path().join("data/jwksd.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("data/jwksd.db-shm"));
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(100) {
        *b = 0x5a;
    }
    std::fs::write(&db, &bytes).unwrap();
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(
        message.contains("damaged") || message.contains("cannot open"),
        "{message}"
    );
    assert!(message.contains("jwksd.db"), "{message}");
}

#[tokio::test]
async fn an_edited_key_row_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    // Move the current key's sealed private half onto the next key's row.
    tamper(dir.path(), &["UPDATE keys SET sealed_private = (SELECT sealed_private FROM keys WHERE state = 'current') \
         WHERE state = 'next'"]).await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("does not decrypt"), "{message}");
}

#[tokio::test]
async fn an_edited_public_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // RSA: the edit is to the public exponent.
    initialise(dir.path(), "").await;
    tamper(
        dir.path(),
        &["UPDATE keys SET public_jwk = replace(public_jwk, '\"e\":\"AQAB\"', '\"e\":\"Aw\"')"],
    )
    .await;
    let message = refusal(dir.path(), "").await;
    // The row's MAC catches the edit before the thumbprint check would.
    assert!(message.contains("does not carry a valid MAC"), "{message}");
}

#[tokio::test]
async fn changing_a_key_sets_algorithm_refuses_to_start_and_suggests_a_new_key_set() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), "").await; // the default, RS384
    let message = refusal(dir.path(), "[keysets.default]\nalg = \"ES384\"\n").await;
    assert!(
        message.contains("holds RS384 keys but is configured for ES384"),
        "{message}"
    );
    assert!(message.contains("new key set"), "{message}");
}

#[tokio::test]
async fn adding_a_key_set_later_initialises_only_that_one() {
    let dir = tempfile::tempdir().unwrap();
    let before = initialise(dir.path(), EC_DEFAULT).await;
    let app = spawn_app_with(
        dir.path(),
        "[keysets.default]\nalg = \"ES256\"\n[keysets.athena]\nalg = \"ES384\"\n",
    )
    .await;
    assert_eq!(app.jwks("default").await, before);
    assert_eq!(
        app.jwks("athena").await["keys"].as_array().unwrap().len(),
        2
    );
    app.stop().await;
}

#[test]
fn bad_configuration_is_a_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = test_config(
        dir.path(),
        "[keysets.default]\nprepublish = \"5m\"\nrsa_bits = 1024\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("prepublish = 5m is shorter than jwks_max_age = 1h"),
        "{err}"
    );
    assert!(err.contains("rsa_bits = 1024"), "{err}");
}

#[tokio::test]
async fn a_backup_restores_the_same_key_sets() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let jwks = app.jwks("default").await;
    let backup = dir.path().join("backup.db");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["backup", "--out", backup.to_str().unwrap()])
        .env("JWKSD_SERVER__DATA_DIR", dir.path().join("data"))
        .envs(crate::helpers::backend_env(dir.path()))
        .output()
        .unwrap();
    if crate::helpers::on_postgres() {
        // Not yet: it says so, and writes nothing.
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(text.contains("PostgreSQL's own tools"), "{text}");
        assert!(!backup.exists());
        app.stop().await;
        return;
    }
    assert!(output.status.success(), "backup while the service runs");
    app.stop().await;

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("data/jwksd.db{suffix}")));
    }
    std::fs::copy(&backup, dir.path().join("data/jwksd.db")).unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(app.jwks("default").await, jwks);
    app.stop().await;
}

#[tokio::test]
async fn an_emptied_store_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    if crate::helpers::on_postgres() {
        // The tables stay, emptied.
        tamper(
            dir.path(),
            &[
                "TRUNCATE keys, audit",
                "DELETE FROM meta WHERE name <> 'schema_version'",
            ],
        )
        .await;
    } else {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("data/jwksd.db{suffix}")));
        }
        std::fs::write(dir.path().join("data/jwksd.db"), b"").unwrap();
    }
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("holds no jwksd data"), "{message}");
}

#[tokio::test]
async fn deleted_key_rows_refuse_to_start() {
    for statement in [
        "DELETE FROM keys",
        "DELETE FROM keys WHERE state = 'current'",
    ] {
        let dir = tempfile::tempdir().unwrap();
        initialise(dir.path(), EC_DEFAULT).await;
        tamper(dir.path(), &[statement]).await;
        let message = refusal(dir.path(), EC_DEFAULT).await;
        assert!(
            message.contains("a row was deleted"),
            "{statement}: {message}"
        );
    }
}

#[tokio::test]
async fn a_key_set_dropped_from_the_configuration_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), "[keysets.epic]\nalg = \"ES256\"\n").await;
    app.stop().await;
    let message = refusal(dir.path(), "").await;
    assert!(
        message.contains("key set \"epic\", which is not configured"),
        "{message}"
    );
}

#[tokio::test]
async fn a_start_that_cannot_bind_leaves_no_store_behind() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let toml = format!("[server]\npublic_listen = \"127.0.0.1:{port}\"\n");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let env = [
        ("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "JWKSD_SERVER__DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
    ];
    let config =
        jwksd::config::Config::load(Some(&path), env.map(|(k, v)| (k.to_owned(), v))).unwrap();
    let message = match jwksd::app::Application::build(config).await {
        Ok(_) => panic!("started on a busy port"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("cannot listen on"), "{message}");
    assert!(!dir.path().join("data/jwksd.db").exists());
    assert!(!dir.path().join("data/master.key").exists());
}

#[tokio::test]
async fn a_signing_key_without_its_private_half_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    initialise(dir.path(), EC_DEFAULT).await;
    // Retire-then-revive by hand: the row claims to be next but its private half is gone.
    tamper(
        dir.path(),
        &[
            "UPDATE keys SET state = 'retired', sealed_private = NULL WHERE state = 'next'",
            "UPDATE keys SET state = 'next' WHERE state = 'retired'",
        ],
    )
    .await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("does not carry a valid MAC"), "{message}");
}

#[tokio::test]
async fn with_an_external_master_key_a_missing_store_is_created_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secret-master.key");
    std::fs::write(&key_file, "42".repeat(32)).unwrap();
    let toml = format!(
        "{EC_DEFAULT}[server]\nmaster_key_file = \"{}\"\n",
        key_file.display()
    );
    let message = refusal(dir.path(), &toml).await;
    assert!(message.contains("jwksd serve --init"), "{message}");
    assert!(!crate::helpers::store_exists(dir.path()).await);

    let mut config = test_config(dir.path(), &toml).unwrap();
    config.server.initialize = true;
    let app = jwksd::app::Application::build(config).await.unwrap();
    drop(app);
    // Once the store exists, no flag is needed.
    let app = spawn_app_with(dir.path(), &toml).await;
    assert_eq!(
        app.jwks("default").await["keys"].as_array().unwrap().len(),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn a_second_jwksd_on_the_same_store_refuses_to_start() {
    if crate::helpers::sqlite_only("the lock file; several jwksd share one PostgreSQL database") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let message = refusal(dir.path(), EC_DEFAULT).await;
    assert!(message.contains("another jwksd is running"), "{message}");
    app.stop().await;
    // Once the first has stopped, the store is free again.
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    app.stop().await;
}

/// Another deployment (its own master key) pointed at a database this one initialised is
/// refused, saying why; the database is left as it was.
#[tokio::test]
async fn a_database_initialised_under_another_master_key_is_refused() {
    if !crate::helpers::on_postgres() {
        eprintln!("PostgreSQL only: a SQLite store lives in its own data directory");
        return;
    }
    let first = tempfile::tempdir().unwrap();
    let jwks = initialise(first.path(), EC_DEFAULT).await;
    let other = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(first.path()).unwrap();
    std::fs::write(other.path().join("postgres-database-url"), url).unwrap();
    let key_file = other.path().join("other-master.key");
    std::fs::write(&key_file, "42".repeat(32)).unwrap();
    let toml = format!(
        "{EC_DEFAULT}[server]\nmaster_key_file = \"{}\"\n",
        key_file.display()
    );
    let message = refusal(other.path(), &toml).await;
    assert!(message.contains("different master key"), "{message}");
    let password = url::Url::parse(&crate::helpers::database_url(first.path()).unwrap())
        .unwrap()
        .password()
        .unwrap_or_default()
        .to_owned();
    assert!(
        password.is_empty() || !message.contains(&password),
        "{message}"
    );
    let app = spawn_app_with(first.path(), EC_DEFAULT).await;
    assert_eq!(app.jwks("default").await, jwks);
    app.stop().await;
}
