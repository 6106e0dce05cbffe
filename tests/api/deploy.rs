//! The deployment files a user relies on: the Dockerfile (no Docker daemon here, so its
//! facts are checked as text, and the binary is run in the environment the image gives it)
//! and the systemd unit (`systemd-analyze verify` where it is installed, its directives as
//! text, and its credentials reaching jwksd through the `_FILE` variables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jwksd::config::{AdminTokenSource, Config, MasterKeySource};

use crate::helpers::{wait_until_listening, KillOnDrop};

const JWKSD: &str = env!("CARGO_BIN_EXE_jwksd");

fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The runtime stage of the Dockerfile: its instructions (continuation lines joined,
/// comments dropped) after the last `FROM`, as (instruction, arguments).
fn runtime_stage() -> Vec<(String, String)> {
    let text = repository_file("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                let (instruction, arguments) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((
                    instruction.to_ascii_uppercase(),
                    arguments.trim().to_owned(),
                ));
                current.clear();
            }
        }
    }
    let last_from = instructions.iter().rposition(|(i, _)| i == "FROM").unwrap();
    instructions.split_off(last_from)
}

fn one<'a>(stage: &'a [(String, String)], instruction: &str) -> &'a str {
    let found: Vec<_> = stage.iter().filter(|(i, _)| i == instruction).collect();
    assert_eq!(
        found.len(),
        1,
        "one {instruction} in the runtime stage: {found:?}"
    );
    &found[0].1
}

/// A JSON-form (exec form) argument list: `["a", "b"]`.
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?} is not exec form: {e}"))
}

/// The image's `ENV` variables.
fn image_env(stage: &[(String, String)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, arguments) in stage.iter().filter(|(i, _)| i == "ENV") {
        for pair in arguments.split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap();
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    env
}

fn port_of(listen: &str) -> u16 {
    listen.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn the_dockerfile_runs_the_binary_it_builds_as_nonroot_with_variables_jwksd_knows() {
    let stage = runtime_stage();
    let from = one(&stage, "FROM");
    assert!(
        from.starts_with("gcr.io/distroless/") && from.ends_with(":nonroot"),
        "{from}"
    );
    assert_eq!(one(&stage, "USER"), "nonroot:nonroot");

    // The binary the builder stage makes is the one the entry point and the probe run.
    let text = repository_file("Dockerfile");
    assert!(text.contains("cargo build --release --locked --bin jwksd"));
    let binary = "/usr/local/bin/jwksd";
    assert!(
        stage
            .iter()
            .any(|(i, a)| i == "COPY" && a.ends_with(&format!("target/release/jwksd {binary}"))),
        "{stage:?}"
    );
    assert_eq!(exec_form(one(&stage, "ENTRYPOINT")), [binary]);
    assert_eq!(exec_form(one(&stage, "CMD")), ["serve"]);
    let healthcheck = one(&stage, "HEALTHCHECK");
    let (_, probe) = healthcheck.split_once("CMD ").unwrap();
    assert_eq!(exec_form(probe), [binary, "healthcheck"]);

    // Every ENV is a variable the configuration takes (an unknown one is refused), and
    // the ports, the volume and the working directory agree with what it sets.
    let env = image_env(&stage);
    assert!(!env.is_empty());
    let config = Config::load(None, env.clone())
        .unwrap_or_else(|e| panic!("the image's ENV is not a valid configuration: {e}"));
    assert!(
        !config.warnings.iter().any(|w| w.contains("ignoring")),
        "{:?}",
        config.warnings
    );
    let exposed: Vec<u16> = one(&stage, "EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        exposed,
        [
            port_of(&config.server.public_listen),
            port_of(&config.server.private_listen)
        ]
    );
    let data_dir = config.server.data_dir.display().to_string();
    assert_eq!(exec_form(one(&stage, "VOLUME")), [data_dir.as_str()]);
    assert_eq!(one(&stage, "WORKDIR"), data_dir);
    assert!(
        stage.iter().any(|(i, a)| i == "COPY"
            && a.starts_with("--from=builder --chown=nonroot:nonroot")
            && a.ends_with(&format!(" {data_dir}"))),
        "the data directory belongs to the image's user: {stage:?}"
    );
}

/// A `jwksd serve` child with exactly `env` (nothing inherited but `PATH`).
async fn serve_with(
    env: &BTreeMap<String, String>,
    args: &[&str],
    cwd: &Path,
) -> (KillOnDrop, PathBuf, u16, u16) {
    let log_path = cwd.join("jwksd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = KillOnDrop(
        Command::new(JWKSD)
            .arg("serve")
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (public, private) = wait_until_listening(&mut child, read_log).await;
    (child, log_path, public.port(), private.port())
}

/// Runs `argv` (the binary's path first) as `docker exec` would: the image's environment
/// and working directory, nothing else.
fn exec_like_docker(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
) -> std::process::Output {
    assert_eq!(argv[0], "/usr/local/bin/jwksd");
    Command::new(JWKSD)
        .args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap()
}

#[tokio::test]
async fn in_the_image_environment_keys_list_and_the_healthcheck_need_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    // The volume: made by the image 0700 for its user, as here.
    let data = dir.path().join("var-lib-jwksd");
    std::fs::create_dir(&data).unwrap();
    let stage = runtime_stage();
    let mut env = image_env(&stage);
    // The image's paths and ports, moved where a test may use them: the data directory
    // into the test's, the listeners to ports the kernel picks (0.0.0.0 stays 0.0.0.0).
    env.insert("JWKSD_SERVER__DATA_DIR".into(), data.display().to_string());
    env.insert("JWKSD_SERVER__PUBLIC_LISTEN".into(), "0.0.0.0:0".into());
    env.insert("JWKSD_SERVER__PRIVATE_LISTEN".into(), "0.0.0.0:0".into());
    env.insert("JWKSD_KEYSETS__DEFAULT__ALG".into(), "ES256".into());
    env.extend(crate::helpers::backend_env(dir.path()));
    let (_server, log, public, private) = serve_with(&env, &[], &data).await;
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("server.private_listen") && log.contains("without TLS"),
        "the image's private listener is beyond loopback and the start says so: {log}"
    );

    // `docker exec CONTAINER jwksd keys list`: the same environment, the bound ports.
    env.insert(
        "JWKSD_SERVER__PUBLIC_LISTEN".into(),
        format!("0.0.0.0:{public}"),
    );
    env.insert(
        "JWKSD_SERVER__PRIVATE_LISTEN".into(),
        format!("0.0.0.0:{private}"),
    );
    let binary = "/usr/local/bin/jwksd".to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let probe = exec_form(one(&stage, "HEALTHCHECK").split_once("CMD ").unwrap().1);
    loop {
        let output = exec_like_docker(&probe, &env, &data);
        if output.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HEALTHCHECK fails: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let listed = exec_like_docker(&[binary, "keys".into(), "list".into()], &env, &data);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let shown = String::from_utf8_lossy(&listed.stdout);
    assert!(
        shown.contains("current") && shown.contains("next"),
        "{shown}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the admin token is the image user's alone"
        );
    }
}

/// The `[Service]` directives of the unit, in order, as (key, value).
fn unit_directives() -> Vec<(String, String)> {
    let text = repository_file("deploy/systemd/jwksd.service");
    let service = text.split("[Service]").nth(1).unwrap();
    let service = service.split("\n[").next().unwrap();
    service
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_systemd_unit_carries_the_hardening_and_verifies() {
    let directives = unit_directives();
    let has = |key: &str, value: &str| directives.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "jwksd"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        (
            "LoadCredential",
            "master-key:/etc/jwksd/credentials/master-key",
        ),
        (
            "LoadCredential",
            "admin-token:/etc/jwksd/credentials/admin-token",
        ),
    ] {
        assert!(has(key, value), "the unit lacks {key}={value}");
    }
    let exec_start = &directives.iter().find(|(k, _)| k == "ExecStart").unwrap().1;
    assert!(
        exec_start.starts_with("/usr/local/bin/jwksd serve"),
        "{exec_start}"
    );

    match Command::new("systemd-analyze").arg("--version").output() {
        Err(_) => eprintln!("systemd-analyze is not installed: the unit was checked as text only"),
        Ok(_) => {
            // `verify` insists that ExecStart's binary exists: the unit is verified as it
            // is, with the path of the binary this test run built instead.
            let dir = tempfile::tempdir().unwrap();
            let unit = dir.path().join("jwksd.service");
            let text = repository_file("deploy/systemd/jwksd.service").replace(
                "ExecStart=/usr/local/bin/jwksd ",
                &format!("ExecStart={JWKSD} "),
            );
            std::fs::write(&unit, text).unwrap();
            let output = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&unit)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() && stderr.trim().is_empty(),
                "{stderr}"
            );
        }
    }
}

#[tokio::test]
async fn the_unit_s_credentials_reach_jwksd_through_its_file_variables() {
    // What systemd does for the unit, done by hand: the credentials copied into
    // $CREDENTIALS_DIRECTORY under their names, %d and %S expanded, the variables set.
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::create_dir_all(state.join("jwksd")).unwrap();
    let admin_token = "u".repeat(43);
    let directives = unit_directives();
    for (_, value) in directives.iter().filter(|(k, _)| k == "LoadCredential") {
        let (name, _) = value.split_once(':').unwrap();
        let content = match name {
            "master-key" => "ab".repeat(32),
            "admin-token" => admin_token.clone(),
            other => panic!("a credential this test does not know: {other}"),
        };
        std::fs::write(credentials.join(name), format!("{content}\n")).unwrap();
    }
    let expand = |value: &str| {
        value
            .replace("%d", &credentials.display().to_string())
            .replace("%S", &state.display().to_string())
    };
    let mut env = BTreeMap::new();
    for (_, value) in directives.iter().filter(|(k, _)| k == "Environment") {
        let (name, value) = value.split_once('=').unwrap();
        env.insert(name.to_owned(), expand(value));
    }
    env.insert(
        "CREDENTIALS_DIRECTORY".into(),
        credentials.display().to_string(),
    );
    // The configuration these variables make: the secrets are the credential files.
    let config = Config::load(None, env.clone()).unwrap();
    assert_eq!(
        config.server.master_key,
        MasterKeySource::File(credentials.join("master-key"))
    );
    assert_eq!(
        config.server.admin_token,
        AdminTokenSource::File(credentials.join("admin-token"))
    );

    env.insert("JWKSD_SERVER__PUBLIC_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("JWKSD_SERVER__PRIVATE_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("JWKSD_KEYSETS__DEFAULT__ALG".into(), "ES256".into());
    env.extend(crate::helpers::backend_env(dir.path()));
    // The first start with an external master key, as the unit's README says: JWKSD_INIT=1.
    env.insert("JWKSD_INIT".into(), "1".into());
    let working_dir = PathBuf::from(expand("%S/jwksd"));
    let (_server, _log, _public, private) = serve_with(&env, &[], &working_dir).await;

    let listed = Command::new(JWKSD)
        .args(["keys", "list", "--admin-token-file"])
        .arg(credentials.join("admin-token"))
        .env_clear()
        .env("JWKSD_SERVER", format!("http://127.0.0.1:{private}"))
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // Nothing secret was generated beside the store: both came from the credentials.
    for generated in ["master.key", "admin.token"] {
        assert!(
            !working_dir.join(generated).exists(),
            "{generated} was generated"
        );
    }
}
