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

/// jwksd with one client `ehr` whose public URL is its loopback listener, and the
/// environment a CLI needs to reach it.
async fn app_with_a_client(dir: &Path) -> crate::helpers::TestApp {
    let public = crate::helpers::loopback_listener();
    let toml = format!(
        "{EC_DEFAULT}[server]\npublic_url = \"{}\"\n[clients.ehr]\nclient_id = \"ehr-client\"\n\
         token_endpoint = \"https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token\"\n",
        crate::helpers::url_of(&public)
    );
    crate::helpers::spawn_app_on(dir, &toml, public, &crate::helpers::TestClock::default()).await
}

/// Runs `jwksd ARGS` against `app` off the test's runtime.
async fn cli(app: &crate::helpers::TestApp, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(JWKSD)
        .kill_on_drop(true)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWKSD_SERVER", &app.private)
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token)
        .output()
        .await
        .unwrap()
}

#[test]
fn every_data_printing_subcommand_answers_json_also_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there (a port bound, then released by dropping it, would race; the
    // discard port on loopback is refused at once).
    let nowhere = [
        ("JWKSD_SERVER", "http://127.0.0.1:9"),
        (
            "JWKSD_ADMIN_TOKEN",
            "an-admin-token-that-goes-nowhere-0123456789",
        ),
    ];
    for args in [
        &["keys", "list", "--json"][..],
        &["keys", "rotate", "--json"],
        &["keys", "revoke", "some-kid", "--json"],
        &["doctor", "--client", "c", "--json"],
        &["register", "--client", "c", "--json"],
    ] {
        let error = json_error(&jwksd(dir.path(), args, &nowhere));
        assert!(error.contains("cannot reach jwksd"), "{args:?}: {error}");
    }
    // token --json without a caller token: the error is JSON too.
    let error = json_error(&jwksd(
        dir.path(),
        &["token", "--client", "c", "--json"],
        &nowhere,
    ));
    assert!(error.contains("JWKSD_CALLER_TOKEN"), "{error}");
    // callers new-token --json prints the token and its hash.
    let output = jwksd(dir.path(), &["callers", "new-token", "--json"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let minted: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(minted["token_sha256"].as_str().unwrap().len(), 64);
    assert!(minted["token"].as_str().unwrap().len() >= 32);
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output = jwksd(dir.path(), &["completions", shell], &[]);
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{shell}: {}", text(&output));
        for word in ["jwksd", "doctor", "register", "config"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let output = jwksd(dir.path(), &["man"], &[]);
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        page.starts_with(".ie") || page.contains(".TH jwksd 1"),
        "{page}"
    );
    assert!(
        page.contains("doctor") && page.contains("completions"),
        "{page}"
    );
}

#[tokio::test]
async fn register_runs_the_doctors_jwks_url_checks_and_keeps_an_existing_kit() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_a_client(dir.path()).await;

    // A loopback, plain-http JWKS URL for Epic (a cloud EHR): the ticket says why it fails.
    let output = cli(
        &app,
        dir.path(),
        &["register", "--client", "ehr", "--vendor", "epic"],
    )
    .await;
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Checks of the JWKS URL"), "{shown}");
    assert!(
        stdout.contains("is plain http") && stdout.contains("a loopback host"),
        "{shown}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: jwks_https") && stderr.contains("warning: jwks_address"),
        "{shown}"
    );
    assert!(!stdout.contains("token endpoint below"), "{shown}");

    // --json: the same as data, with the checks doctor runs.
    let output = cli(
        &app,
        dir.path(),
        &["register", "--client", "ehr", "--vendor", "epic", "--json"],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let kit: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(kit["client_id"], "ehr-client");
    assert_eq!(kit["keys"].as_array().unwrap().len(), 2, "{kit}");
    let verdict = |name: &str| {
        kit["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["verdict"].clone())
            .unwrap_or_else(|| panic!("no {name}: {kit}"))
    };
    assert_eq!(verdict("jwks_https"), "fail");
    assert_eq!(verdict("jwks_address"), "fail");
    assert_eq!(verdict("jwks_fetch"), "ok");

    // --out: a new directory is written; an existing, non-empty one only with --force.
    let out = dir.path().join("ticket");
    let out_arg = out.to_str().unwrap();
    let first = cli(
        &app,
        dir.path(),
        &["register", "--client", "ehr", "--out", out_arg],
    )
    .await;
    assert!(first.status.success(), "{}", text(&first));
    let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
    let again = cli(
        &app,
        dir.path(),
        &["register", "--client", "ehr", "--out", out_arg],
    )
    .await;
    let shown = text(&again);
    assert!(!again.status.success(), "{shown}");
    assert!(
        shown.contains("is not empty") && shown.contains("--force"),
        "{shown}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("README.txt")).unwrap(),
        readme
    );
    let forced = cli(
        &app,
        dir.path(),
        &["register", "--client", "ehr", "--out", out_arg, "--force"],
    )
    .await;
    assert!(forced.status.success(), "{}", text(&forced));
    app.stop().await;
}

/// The marker a README shell block carries when this test runs it as written.
const README_MARKER: &str =
    "<!-- tested: cli_first_day::the_readmes_marked_commands_run_as_written -->";

/// The shell lines of every fenced block that follows [`README_MARKER`] in `readme`.
fn marked_commands(readme: &str) -> Vec<String> {
    let mut lines = readme.lines();
    let mut commands = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim() != README_MARKER {
            continue;
        }
        let Some(_fence) = lines.by_ref().find(|l| l.trim_start().starts_with("```")) else {
            break;
        };
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            if !line.trim().is_empty() {
                commands.push(line.to_owned());
            }
        }
    }
    commands
}

/// The README's marked commands (the run command and the quick start), as a script: run
/// through `jwksd` on PATH (`cargo run --release --` is the same binary); a `serve` runs
/// in the background until the next command that needs it has had its answer, and the
/// previous one is stopped before the next `serve`.
fn readme_script(commands: &[String]) -> String {
    let mut script = String::from(
        "set -e\nSERVE_PID=\nstop_serve() { if [ -n \"$SERVE_PID\" ]; then kill $SERVE_PID; wait $SERVE_PID || true; fi; }\ntrap stop_serve EXIT\n",
    );
    for command in commands {
        let command = command.replace("cargo run --release --", "jwksd");
        script.push_str(&format!("echo '+ {}'\n", command.replace('\'', "'\\''")));
        if command.contains("jwksd serve") {
            script.push_str("stop_serve\n");
            script.push_str(&format!("{command} >>serve.log 2>&1 &\nSERVE_PID=$!\n"));
            script.push_str(
                "for i in $(seq 1 300); do jwksd healthcheck >/dev/null 2>&1 && break; \
                 kill -0 $SERVE_PID 2>/dev/null || { cat serve.log; exit 1; }; sleep 0.2; done\n\
                 jwksd healthcheck\n",
            );
        } else {
            script.push_str(&format!("{command}\n"));
        }
    }
    script
}

/// The README's commands work as written: its marked blocks run in an empty directory, in
/// a network namespace of their own (they use the default ports; `unshare` needs root, as
/// the other tests of the default configuration do), with the built binary as `jwksd`.
#[test]
fn the_readmes_marked_commands_run_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let commands = marked_commands(&readme);
    assert!(
        commands.iter().any(|c| c.contains("serve")),
        "README.md marks no shell block with {README_MARKER} (put it on the line before the \
         fenced blocks of \"Run it\" and of the container's first start)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(JWKSD, bin.join("jwksd")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let script = readme_script(&commands);
    let output = Command::new("unshare")
        .args(["-n", "bash", "-c", &format!("ip link set lo up\n{script}")])
        .current_dir(&work)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare(1) (it needs root): {e}"));
    assert!(
        output.status.success(),
        "the README's commands failed:\n{script}\n{}",
        text(&output)
    );
}

#[test]
fn marked_readme_blocks_are_found_and_only_those() {
    let readme = format!(
        "```sh\nnot marked\n```\n{README_MARKER}\n\n```sh\njwksd serve\n\ncurl -i x   # c\n```\n"
    );
    assert_eq!(marked_commands(&readme), ["jwksd serve", "curl -i x   # c"]);
}
