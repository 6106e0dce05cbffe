//! The operator's first day with the configuration (issue 11): every problem in the file is
//! shown at its line and column in that file, every problem from the environment names its
//! variable, all of them at once, through the real binary (`check-config` and `serve`);
//! `check-config` shows what it resolved and where each secret comes from, never the secret;
//! boolean variables take what people write; API answers say what is expected in plain words.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app_with};
use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};

const JWKSD: &str = env!("CARGO_BIN_EXE_jwksd");

/// `jwksd ARGS` in `dir` with exactly the variables `env`.
fn jwksd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(JWKSD);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Issue 11's file: `[sever]` on line 1, `token_endpiont` on line 17, and a bad duration in
/// a key set that a client uses.
const FIRST_DAY: &str = "[sever]
public_url = \"https://keys.example.org\"

[keysets.default]
alg = \"ES256\"
retire_grace = \"1m\"

# The eClinicalWorks registration.
#
#
#
#
#
#
[clients.ecw]
client_id = \"p1VE0PKTI8\"
token_endpiont = \"https://oauthserver.eclinicalworks.com/oauth/oauth2/token\"
fhir_base_url = \"https://fhir4.eclinicalworks.com/fhir/r4/ABCDEF\"
";

fn assert_first_day_problems(shown: &str) {
    for needle in [
        "jwksd.toml: line 1, column 2: `sever` is not a known section; did you mean `server`?",
        "jwksd.toml: line 6, column 16: keysets.default.retire_grace = 1m is too short",
        "jwksd.toml: line 17, column 1: clients.ecw.token_endpiont is not a known key; did you \
         mean `token_endpoint`?",
        "JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE=abc: keysets.default.jwks_max_age = \"abc\" is not \
         a duration",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in {shown}");
    }
    assert!(!shown.contains("line 10"), "{shown}");
    assert!(!shown.contains("line 21"), "{shown}");
}

#[test]
fn check_config_shows_each_problem_at_the_users_line_and_column_or_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwksd.toml"), FIRST_DAY).unwrap();
    let output = jwksd(
        dir.path(),
        &["check-config", "--config", "jwksd.toml"],
        &[("JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE", "abc")],
    );
    let shown = printed(&output);
    assert!(!output.status.success(), "{shown}");
    assert_first_day_problems(&shown);
}

#[test]
fn serve_refuses_the_same_file_with_the_same_places_and_reads_booleans_people_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwksd.toml"), FIRST_DAY).unwrap();
    for init in ["1", "yes", "On", "false", "0", "no", "off", "TRUE"] {
        let output = jwksd(
            dir.path(),
            &["serve", "--config", "jwksd.toml"],
            &[
                ("JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE", "abc"),
                ("JWKSD_INIT", init),
                ("JWKSD_UPGRADE_STORE", init),
            ],
        );
        let shown = printed(&output);
        assert!(!output.status.success(), "{shown}");
        assert!(
            !shown.contains("invalid value"),
            "JWKSD_INIT={init}: {shown}"
        );
        assert_first_day_problems(&shown);
    }
    let output = jwksd(
        dir.path(),
        &["serve", "--config", "jwksd.toml"],
        &[("JWKSD_INIT", "maybe")],
    );
    let shown = printed(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("1/0, true/false, yes/no or on/off"),
        "says what it takes: {shown}"
    );
}

#[test]
fn check_config_refuses_duplicate_client_ids_naming_both_sections() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwksd.toml"),
        "[clients.ecw-prod]\nclient_id = \"abc\"\ntoken_endpoint = \"https://e.example/t\"\n\
         [clients.ecw-copy]\nclient_id = \"abc\"\ntoken_endpoint = \"https://e.example/t\"\n",
    )
    .unwrap();
    let output = jwksd(dir.path(), &["check-config", "--config", "jwksd.toml"], &[]);
    let shown = printed(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("jwksd.toml: line 2, column 13: clients.ecw-prod.client_id")
            && shown.contains("[clients.ecw-copy] and [clients.ecw-prod]"),
        "{shown}"
    );
}

#[test]
fn check_config_prints_what_it_resolves_and_where_each_secret_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let master_key = "11".repeat(32);
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "t".repeat(40)).unwrap();
    let caller_hash = "ab".repeat(32);
    std::fs::write(
        dir.path().join("jwksd.toml"),
        format!(
            "[server]\npublic_url = \"https://keys.example.org\"\nadmin_token_file = \"{}\"\n\
             [keysets.epic-prod]\nalg = \"ES384\"\n\
             [clients.ecw-prod]\nclient_id = \"p1VE0PKTI8\"\nkeyset = \"epic-prod\"\n\
             token_endpoint = \"https://e.example/token\"\nscope = \"system/Patient.read\"\n\
             allowed_scopes = \"system/Patient.read system/Observation.read\"\n\
             [callers.billing-sync]\ntoken_sha256 = \"{caller_hash}\"\nclients = [\"ecw-prod\"]\n",
            token_file.display()
        ),
    )
    .unwrap();
    let output = jwksd(
        dir.path(),
        &["check-config", "--config", "jwksd.toml"],
        &[("JWKSD_SERVER__MASTER_KEY", &master_key)],
    );
    let shown = printed(&output);
    assert!(output.status.success(), "{shown}");
    for needle in [
        "public URL:       https://keys.example.org",
        "key set epic-prod: ES384, rotation_period 90d, jwks_max_age 1h, prepublish 1h 15m, \
         retire_grace 1d",
        "client ecw-prod: client_id p1VE0PKTI8, key set epic-prod",
        "token endpoint https://e.example/token",
        "scope \"system/Patient.read\"",
        "allowed scopes \"system/Patient.read system/Observation.read\"",
        "caller billing-sync: clients ecw-prod",
        "master key:       inline, from the variable JWKSD_SERVER__MASTER_KEY",
        "admin token:      the file",
        "token inline (token_sha256) in jwksd.toml",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in {shown}");
    }
    assert!(!shown.contains(&master_key), "{shown}");
    assert!(!shown.contains(&caller_hash), "{shown}");
    assert!(!shown.contains(&"t".repeat(40)), "{shown}");
}

#[tokio::test]
async fn a_request_body_of_the_wrong_shape_is_refused_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let problem = assert_problem(
        request_assertion(
            &app,
            BILLING_TOKEN,
            json!({"client_id": "ecw", "lifetime": "60s"}),
        )
        .await,
        422,
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("`lifetime` must be a whole number"),
        "{problem}"
    );
    for serde_words in ["invalid type", "i64", "expected"] {
        assert!(!detail.contains(serde_words), "{problem}");
    }
    let problem = assert_problem(
        request_assertion(&app, BILLING_TOKEN, json!({"lifetime": 60})).await,
        422,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`client_id` is required"),
        "{problem}"
    );
    app.stop().await;
}
