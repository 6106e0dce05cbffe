//! The operator's first day through the real binary: a refused start leaves nothing behind,
//! every data-printing subcommand answers `--json` (errors included), `register` runs the
//! doctor's JWKS-URL checks, completions and the man page come from the clap definitions,
//! and the README's marked commands run as written.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::{spawn_app_with, test_config, EC_DEFAULT};

const JWKSD: &str = env!("CARGO_BIN_EXE_jwksd");

/// Runs `jwksd ARGS` in `dir` with exactly the variables `env` (and `PATH`).
fn jwksd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(JWKSD)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `{"error": "..."}` object a failed `--json` command prints on stdout.
fn json_error(output: &Output) -> String {
    assert!(!output.status.success(), "{}", text(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let error: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("stdout is not one JSON object: {}", text(output)));
    error["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error member: {stdout}"))
        .to_owned()
}

#[tokio::test]
async fn a_start_refused_for_a_missing_store_writes_no_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secret-master.key");
    std::fs::write(&key_file, "42".repeat(32)).unwrap();
    let toml = format!(
        "{EC_DEFAULT}[server]\nmaster_key_file = \"{}\"\n",
        key_file.display()
    );
    let config = test_config(dir.path(), &toml).unwrap();
    let data_dir = config.server.data_dir.clone();
    let refused = jwksd::app::Application::build(config).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("--init"), "{message}");
    assert!(
        !data_dir.join("admin.token").exists(),
        "a refused start leaves no admin token behind"
    );
    // Once asked to initialise, the token is generated with the store.
    let mut config = test_config(dir.path(), &toml).unwrap();
    config.server.initialize = true;
    let app = jwksd::app::Application::build(config).await.unwrap();
    drop(app);
    assert!(data_dir.join("admin.token").exists());
    let app = spawn_app_with(dir.path(), &toml).await;
    app.stop().await;
}

#[test]
fn an_error_chain_never_repeats_a_message_in_a_caused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    // A port another socket holds: the start error names it, and its I/O cause is the
    // same words again.
    let taken = crate::helpers::loopback_listener();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let output = jwksd(
        dir.path(),
        &["serve"],
        &[
            ("JWKSD_SERVER__PUBLIC_LISTEN", &addr),
            ("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0"),
            ("JWKSD_SERVER__DATA_DIR", data.to_str().unwrap()),
            ("JWKSD_KEYSETS__DEFAULT__ALG", "ES256"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    let report: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("error: "))
        .collect();
    assert!(report[0].contains("Address already in use"), "{stderr}");
    let mut said = vec![report[0].trim_start_matches("error: ")];
    for line in &report[1..] {
        let Some(cause) = line.trim().strip_prefix("caused by: ") else {
            continue;
        };
        assert!(
            !said.iter().any(|earlier| earlier.contains(cause)),
            "{cause:?} was already said:\n{stderr}"
        );
        said.push(cause);
    }
}
