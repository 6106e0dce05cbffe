//! Configuration reloads (what SIGHUP does): clients and callers change at once, and every
//! change that needs a restart, secrets included, is reported as such; nothing else is.

use jwksd::app::Application;
use jwksd::keys::MasterKey;

use crate::helpers::test_config;

/// EC keys: these tests are about the configuration, not about key generation.
const KEYSET: &str = "[keysets.default]\nalg = \"ES256\"\n";

fn server_warnings(warnings: &[String]) -> Vec<&String> {
    warnings
        .iter()
        .filter(|w| w.contains("[server] changes take effect at the next restart"))
        .collect()
}

async fn build(dir: &std::path::Path, toml: &str, init: bool) -> Application {
    let mut config = test_config(dir, toml).expect("test config is valid");
    config.server.initialize = init;
    match Application::build(config).await {
        Ok(app) => app,
        Err(e) => panic!("jwksd did not start: {e}"),
    }
}

fn master_key_text() -> String {
    MasterKey::generate().1.to_string()
}

#[tokio::test]
async fn a_reload_after_changing_the_inline_admin_token_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = |token: &str| format!("[server]\nadmin_token = \"{token}\"\n{KEYSET}");
    let first = "first-admin-token-0123456789abcdefghijklmnop";
    let app = build(dir.path(), &toml(first), false).await;
    let reloader = app.reloader();

    let unchanged = reloader
        .apply(test_config(dir.path(), &toml(first)).unwrap())
        .unwrap();
    assert!(server_warnings(&unchanged).is_empty(), "{unchanged:?}");

    let second = "second-admin-token-0123456789abcdefghijklmno";
    let changed = reloader
        .apply(test_config(dir.path(), &toml(second)).unwrap())
        .unwrap();
    let reported = server_warnings(&changed);
    assert!(
        reported.iter().any(|w| w.contains("server.admin_token")),
        "{changed:?}"
    );
    for warning in &changed {
        assert!(
            !warning.contains(first) && !warning.contains(second),
            "{warning}"
        );
    }
}

#[tokio::test]
async fn a_reload_after_changing_the_admin_token_file_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "file-admin-token-0123456789abcdefghijklmnop\n").unwrap();
    let toml = format!(
        "[server]\nadmin_token_file = \"{}\"\n{KEYSET}",
        token_file.display()
    );
    let app = build(dir.path(), &toml, false).await;
    let reloader = app.reloader();

    let unchanged = reloader
        .apply(test_config(dir.path(), &toml).unwrap())
        .unwrap();
    assert!(server_warnings(&unchanged).is_empty(), "{unchanged:?}");

    std::fs::write(&token_file, "rotated-admin-token-0123456789abcdefghijklm\n").unwrap();
    let changed = reloader
        .apply(test_config(dir.path(), &toml).unwrap())
        .unwrap();
    assert!(
        server_warnings(&changed)
            .iter()
            .any(|w| w.contains("server.admin_token")),
        "{changed:?}"
    );
}

#[tokio::test]
async fn a_reload_after_changing_the_master_key_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, master_key_text()).unwrap();
    let from_file = format!(
        "[server]\nmaster_key_file = \"{}\"\n{KEYSET}",
        key_file.display()
    );
    let app = build(dir.path(), &from_file, true).await;
    let reloader = app.reloader();

    // The file holds another key now: the running service keeps the one it started with.
    std::fs::write(&key_file, master_key_text()).unwrap();
    let changed = reloader
        .apply(test_config(dir.path(), &from_file).unwrap())
        .unwrap();
    assert!(
        server_warnings(&changed)
            .iter()
            .any(|w| w.contains("server.master_key")),
        "{changed:?}"
    );

    // The key given inline instead of from the file.
    let inline = format!("[server]\nmaster_key = \"{}\"\n{KEYSET}", master_key_text());
    let changed = reloader
        .apply(test_config(dir.path(), &inline).unwrap())
        .unwrap();
    assert!(
        server_warnings(&changed)
            .iter()
            .any(|w| w.contains("server.master_key")),
        "{changed:?}"
    );
}

#[tokio::test]
async fn a_reload_right_after_serve_init_with_an_unchanged_file_reports_no_server_change() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, master_key_text()).unwrap();
    let toml = format!(
        "[server]\nmaster_key_file = \"{}\"\n{KEYSET}",
        key_file.display()
    );
    // `jwksd serve --init`: the first start with an external master key.
    let app = build(dir.path(), &toml, true).await;
    let warnings = app
        .reloader()
        .apply(test_config(dir.path(), &toml).unwrap())
        .unwrap();
    assert!(server_warnings(&warnings).is_empty(), "{warnings:?}");
    assert!(warnings.is_empty(), "nothing changed: {warnings:?}");
}
