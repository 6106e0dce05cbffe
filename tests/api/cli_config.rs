//! The admin CLI follows the server's own configuration: with nothing but the variables the
//! server was started with (or its `--config` file), `jwksd keys list` finds the private
//! listener and the admin token where the server put them.
//!
//! The server listens on the configuration's own addresses, default ports included, so
//! each one runs in a network namespace of its own (`unshare -n`, which needs root, as the
//! full-disk test does) and the CLI joins it (`nsenter`): no port is shared with another
//! test or another program on this host, and none is chosen before it is bound.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::KillOnDrop;

const JWKSD: &str = env!("CARGO_BIN_EXE_jwksd");

/// `jwksd serve` alone in a new network namespace; killed when dropped.
struct IsolatedServer {
    child: KillOnDrop,
    log: std::path::PathBuf,
}

impl IsolatedServer {
    /// Starts `jwksd serve ARGS` in `dir` with exactly the variables `env`.
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> IsolatedServer {
        let log = dir.join("jwksd.log");
        let mut command = Command::new("unshare");
        command
            .args([
                "-n",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" serve \"$@\"",
            ])
            .arg(JWKSD)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run unshare(1) for the CLI configuration test (it needs root): {e}")
        });
        let server = IsolatedServer {
            child: KillOnDrop(child),
            log,
        };
        server.wait_ready(dir, args, env);
        server
    }

    /// Runs `jwksd ARGS` in the server's network namespace, in `dir`, with exactly `env`.
    fn cli(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/proc/{}/ns/net", self.child.id()))
            .arg(JWKSD)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter(1) (it needs root): {e}"))
    }

    /// Polls `jwksd healthcheck` (the same configuration) until the server is ready.
    fn wait_ready(&self, dir: &Path, serve_args: &[&str], env: &[(&str, &str)]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut args = vec!["healthcheck"];
        args.extend_from_slice(serve_args);
        while Instant::now() < deadline {
            if self.cli(dir, &args, env).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "jwksd did not become ready: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `keys list` table shows the current and the next key of the default key set.
fn assert_lists_keys(output: &Output) {
    let shown = text(output);
    assert!(output.status.success(), "{shown}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("KID"), "{shown}");
    for state in ["current", "next"] {
        assert!(
            stdout.lines().skip(1).any(|l| l.contains(state)),
            "a {state} key is listed: {shown}"
        );
    }
}

#[test]
fn keys_list_finds_the_server_from_its_data_dir_variable_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("elsewhere");
    let data_dir = data.to_str().unwrap();
    // EC keys: this test is about finding the server, not about RSA.
    let server = IsolatedServer::start(
        dir.path(),
        &[],
        &[
            ("JWKSD_SERVER__DATA_DIR", data_dir),
            ("JWKSD_KEYSETS__DEFAULT__ALG", "ES256"),
        ],
    );
    assert!(
        data.join("admin.token").exists(),
        "the server generated its token there"
    );

    let output = server.cli(
        dir.path(),
        &["keys", "list"],
        &[("JWKSD_SERVER__DATA_DIR", data_dir)],
    );
    assert_lists_keys(&output);

    // Without the variable the CLI looks in ./data, where there is no token, and says so.
    let output = server.cli(dir.path(), &["keys", "list"], &[]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains("data/admin.token") && shown.contains("JWKSD_ADMIN_TOKEN"),
        "the error names the file and the fix: {shown}"
    );

    // JWKSD_ADMIN_TOKEN still overrides: a wrong one is sent, and refused.
    let output = server.cli(
        dir.path(),
        &["keys", "list"],
        &[
            ("JWKSD_SERVER__DATA_DIR", data_dir),
            ("JWKSD_ADMIN_TOKEN", "not-the-admin-token-0123456789abcdef"),
        ],
    );
    let shown = text(&output);
    assert!(!output.status.success() && shown.contains("401"), "{shown}");
}

#[test]
fn keys_list_follows_a_config_file_that_moves_the_private_listener() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{}\n", "t".repeat(40))).unwrap();
    // An unspecified address: the CLI reaches it through loopback.
    std::fs::write(
        dir.path().join("jwksd.toml"),
        format!(
            "[server]\nprivate_listen = \"0.0.0.0:9181\"\ndata_dir = \"state\"\n\
             admin_token_file = \"{}\"\n\n[keysets.default]\nalg = \"ES256\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    let server = IsolatedServer::start(dir.path(), &["--config", "jwksd.toml"], &[]);

    let output = server.cli(dir.path(), &["keys", "list", "--config", "jwksd.toml"], &[]);
    assert_lists_keys(&output);
    let output = server.cli(
        dir.path(),
        &["keys", "list"],
        &[("JWKSD_CONFIG", "jwksd.toml")],
    );
    assert_lists_keys(&output);

    // JWKSD_SERVER still overrides: the default port has no listener in this namespace.
    let output = server.cli(
        dir.path(),
        &["keys", "list", "--config", "jwksd.toml"],
        &[("JWKSD_SERVER", "http://127.0.0.1:8081")],
    );
    let shown = text(&output);
    assert!(
        !output.status.success() && shown.contains("cannot reach jwksd at http://127.0.0.1:8081"),
        "{shown}"
    );

    // A token file that cannot be read is named, with the setting and the fix.
    std::fs::remove_file(&token_file).unwrap();
    std::fs::create_dir(&token_file).unwrap();
    let output = server.cli(dir.path(), &["keys", "list", "--config", "jwksd.toml"], &[]);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(
        shown.contains(&token_file.display().to_string())
            && shown.contains("server.admin_token_file")
            && shown.contains("JWKSD_ADMIN_TOKEN"),
        "the error names the file, the setting and the fix: {shown}"
    );
}

/// `jwksd check-config | head -2`: once the reader has gone, the CLI stops quietly, as
/// Unix tools do, rather than panicking about a broken pipe.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["check-config"][..], &["man"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(JWKSD)
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("JWKSD_SERVER__DATA_DIR", dir.path())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}
