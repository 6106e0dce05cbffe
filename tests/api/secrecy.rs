//! Private keys never appear unencrypted: not in the store, not in a response, not in the
//! log. Runs the real binary with no configuration at all, as a first-time user would.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use jwksd::keys::seal::private_key_aad;
use jwksd::keys::{KeyMaterial, MasterKey};
use jwksd::store::sqlite::SqliteStore;
use jwksd::store::Store;

use crate::helpers::{wait_until_listening, Captured, KillOnDrop};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_binary_starts_with_no_configuration_and_never_reveals_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_jwksd"))
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("JWKSD_SERVER__PUBLIC_LISTEN", "127.0.0.1:0")
            .env("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0")
            .env("JWKSD_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read as it is written: a debug log left in the pipe would fill it and stall jwksd.
    let stdout = Captured::start(child.stdout.take().unwrap());
    let stderr = Captured::start(child.stderr.take().unwrap());
    let (public, private) =
        wait_until_listening(&mut child, || format!("{}{}", stdout.text(), stderr.text())).await;
    let http = crate::helpers::http_client();
    let public = format!("http://{public}");
    let private = format!("http://{private}");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{public}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "jwksd serve did not become ready");
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let mut responses = Vec::new();
    responses.extend(
        http.get(format!("{public}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    for path in ["/admin/v1/keysets", "/admin/v1/keysets/default/keys"] {
        let r = http
            .get(format!("{private}{path}"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        responses.extend(r.bytes().await.unwrap());
    }
    let rotated = http
        .post(format!(
            "{private}/admin/v1/keysets/default/rotate?force=true"
        ))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    responses.extend(rotated.bytes().await.unwrap());
    let jwks: serde_json::Value = http
        .get(format!("{public}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(
                key.get(member).is_none(),
                "private member {member} in the JWKS"
            );
        }
    }

    // The healthcheck subcommand is the container probe.
    let probe = Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["healthcheck", "--url", &format!("{public}/readyz")])
        .status()
        .unwrap();
    assert!(probe.success());

    // Stop the service (SIGTERM: graceful) and collect its log.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let log = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let mut log = stdout.finish();
        log.extend(stderr.finish());
        log
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("jwksd is listening"));

    // Decrypt the private keys that still exist with the master key, and look for them.
    let data = dir.path().join("data");
    let master = std::sync::Arc::new(
        MasterKey::from_text(&std::fs::read_to_string(data.join("master.key")).unwrap()).unwrap(),
    );
    // The files as the stopped service left them, read before this test opens the store
    // itself: SQLite removes the -wal and -shm files when its last connection closes,
    // which sqlx finishes on a thread of its own after `close` returns.
    let mut store_bytes = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("jwksd.db")
        {
            store_bytes.extend(std::fs::read(path).unwrap());
        }
    }
    let store = SqliteStore::open(&data.join("jwksd.db"), false, Some(master.clone()))
        .await
        .unwrap();
    let keys = store.load_keys().await.unwrap();
    store.close().await.unwrap();
    let mut checked = 0;
    for key in keys {
        let Some(sealed) = key.sealed_private else {
            assert!(
                !key.record.state.is_published()
                    || key.record.state == jwksd::rotation::KeyState::Retired
            );
            continue;
        };
        let r = &key.record;
        let pkcs8 = master
            .open(&sealed, &private_key_aad(&r.kid, &r.keyset, r.alg.as_str()))
            .unwrap();
        KeyMaterial::from_pkcs8(r.alg, &pkcs8).expect("the sealed key is a real key");
        // Any 24-byte window of the private key, raw, base64 or hex, would be a leak.
        let window = &pkcs8[pkcs8.len() / 2..pkcs8.len() / 2 + 24];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8[300..330]);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&pkcs8[300..330]);
        let hex = hex::encode(window);
        for (what, bytes) in [
            ("store", &store_bytes),
            ("responses", &responses),
            ("log", &log),
        ] {
            assert!(
                !contains(bytes, window),
                "raw private key bytes in the {what}"
            );
            assert!(
                !contains(bytes, &b64.as_bytes()[..32]),
                "base64 private key in the {what}"
            );
            assert!(
                !contains(bytes, &b64url.as_bytes()[..32]),
                "base64url private key in the {what}"
            );
            assert!(
                !contains(bytes, hex.as_bytes()),
                "hex private key in the {what}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 2, "the current and the next key were checked");
}

const CONFIG_SECRET: &str = "s3cr3t-very-long-token-value-0123456789abcdef";

/// A configuration file whose `admin_token` string is never closed.
fn unterminated_secret() -> String {
    format!("[server]\nadmin_token = \"{CONFIG_SECRET}\n")
}

#[test]
fn check_config_reports_a_broken_secret_by_position_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwksd.toml"), unterminated_secret()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["check-config", "--config", "jwksd.toml"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{printed}");
    assert!(
        !printed.contains("s3cr3t"),
        "the secret is printed: {printed}"
    );
    assert!(printed.contains("jwksd.toml: line 2, column"), "{printed}");
}

#[tokio::test]
async fn a_refused_reload_never_logs_the_broken_secret() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::try_build(dir.path(), "").await.unwrap();
    let reloader = app.reloader();
    // `try_build` wrote the configuration here; the reload re-reads the same file.
    std::fs::write(dir.path().join("test-config.toml"), unterminated_secret()).unwrap();
    let refusal = reloader.reload().unwrap_err();
    assert!(
        !refusal.contains("s3cr3t"),
        "the secret is in the log line: {refusal}"
    );
    assert!(
        refusal.contains("test-config.toml: line 2, column"),
        "{refusal}"
    );
}
