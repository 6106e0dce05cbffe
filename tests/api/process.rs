//! Tests that need the real `jwksd` process: SIGKILL during signing, SIGHUP reloads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{wait_until_listening, KillOnDrop};
use crate::signing::{sha256_hex, signing_config, BILLING_TOKEN, EXPORT_TOKEN};

/// A `jwksd serve` child process on ports it bound itself, killed when dropped.
pub struct Service {
    child: KillOnDrop,
    pub public: String,
    pub private: String,
    pub dir: PathBuf,
    http: reqwest::Client,
}

impl Service {
    pub async fn start(dir: &Path) -> Service {
        Service::start_limited(dir, None).await
    }

    /// Starts jwksd with at most `open_files` file descriptors (`ulimit -n`), when given.
    /// Both listeners are on port 0; the test reads the bound ports from jwksd's log.
    pub async fn start_limited(dir: &Path, open_files: Option<u32>) -> Service {
        let log_path = dir.join("jwksd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        // A restart appends to the same log: only what this process writes counts.
        let log_start = log.metadata().unwrap().len() as usize;
        let mut command = match open_files {
            None => Command::new(env!("CARGO_BIN_EXE_jwksd")),
            Some(limit) => {
                let mut shell = Command::new("bash");
                shell.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_jwksd"),
                ]);
                shell
            }
        };
        let mut child = KillOnDrop(
            command
                .args(["serve", "--config", "jwksd.toml"])
                .current_dir(dir)
                .env("JWKSD_SERVER__PUBLIC_LISTEN", "127.0.0.1:0")
                .env("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0")
                .env("JWKSD_LOG", "info")
                .envs(crate::helpers::backend_env(dir))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let this_run = || {
            let log = std::fs::read(&log_path).unwrap_or_default();
            String::from_utf8_lossy(log.get(log_start..).unwrap_or_default()).into_owned()
        };
        let (public, private) = wait_until_listening(&mut child, this_run).await;
        let service = Service {
            child,
            public: format!("http://{public}"),
            private: format!("http://{private}"),
            dir: dir.to_owned(),
            http: crate::helpers::http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = service
                .http
                .get(format!("{}/readyz", service.public))
                .send()
                .await
            {
                if r.status() == 200 {
                    return service;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("jwksd did not become ready: {}", service.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("jwksd.log")).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn kill(mut self) {
        self.signal("KILL");
        self.child.wait().unwrap();
    }

    pub fn stop(mut self) {
        self.signal("TERM");
        self.child.wait().unwrap();
    }

    pub async fn assertion(&self, token: &str, client: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}/v1/assertions", self.private))
            .bearer_auth(token)
            .json(&json!({ "client_id": client }))
            .send()
            .await
    }

    /// Every jti of every `assertion.issued` record, through the admin API.
    pub async fn audited_jtis(&self) -> HashSet<String> {
        let token = std::fs::read_to_string(self.dir.join("data/admin.token")).unwrap();
        let mut jtis = HashSet::new();
        let mut cursor = String::new();
        loop {
            let page: Value = self
                .http
                .get(format!(
                    "{}/admin/v1/audit?limit=1000{cursor}",
                    self.private
                ))
                .bearer_auth(token.trim())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for record in page["records"].as_array().unwrap() {
                if record["event"] == "assertion.issued" {
                    jtis.insert(record["jti"].as_str().unwrap().to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return jtis,
            }
        }
    }
}

pub fn audit_verify(dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["audit", "verify", "--config", "jwksd.toml"])
        .current_dir(dir)
        .envs(crate::helpers::backend_env(dir))
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_signing_burst_loses_no_audit_record_of_a_delivered_assertion() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwksd.toml"), signing_config("")).unwrap();
    let service = Service::start(dir.path()).await;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, url, received) = (
            service.http.clone(),
            format!("{}/v1/assertions", service.private),
            received.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Bounded: at most 15 s and 1000 requests per worker; ends at the first failure.
            let deadline = Instant::now() + Duration::from_secs(15);
            for _ in 0..1000 {
                if Instant::now() > deadline {
                    break;
                }
                let sent = http
                    .post(&url)
                    .bearer_auth(BILLING_TOKEN)
                    .json(&json!({"client_id": "ecw"}))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                received
                    .lock()
                    .unwrap()
                    .push(body["jti"].as_str().unwrap().to_owned());
            }
        }));
    }
    // Kill the service mid-burst, once a good number of assertions were delivered.
    let started = Instant::now();
    while received.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    service.kill();
    for worker in workers {
        worker.await.unwrap();
    }
    let delivered: Vec<String> = received.lock().unwrap().clone();
    assert!(
        delivered.len() >= 100,
        "the burst delivered only {} assertions",
        delivered.len()
    );

    let restarted = Service::start(dir.path()).await;
    let audited = restarted.audited_jtis().await;
    let missing = delivered
        .iter()
        .filter(|jti| !audited.contains(*jti))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} delivered assertions have no audit record",
        delivered.len()
    );
    restarted.stop();
    let (ok, text) = audit_verify(dir.path());
    assert!(ok, "{text}");
}

#[tokio::test]
async fn sighup_reloads_callers_and_a_bad_reload_keeps_the_running_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("jwksd.toml");
    std::fs::write(&config_path, signing_config("")).unwrap();
    let service = Service::start(dir.path()).await;
    let newcomer = "newcomer-token-0123456789abcdefghijklmnopqrstu";
    assert_eq!(
        service.assertion(newcomer, "ecw").await.unwrap().status(),
        401
    );

    let added = format!(
        "\n[callers.newcomer]\ntoken_sha256 = \"{}\"\nclients = [\"ecw\"]\n",
        sha256_hex(newcomer)
    );
    std::fs::write(&config_path, signing_config(&added)).unwrap();
    service.signal("HUP");
    let mut status = 0;
    for _ in 0..100 {
        status = service
            .assertion(newcomer, "ecw")
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, 200,
        "the new caller works after SIGHUP without a restart"
    );

    // A broken file: the running configuration stays and the log says why.
    std::fs::write(
        &config_path,
        signing_config(&added).replace("clients = [\"ecw\"]", "clients = [\"nope\"]"),
    )
    .unwrap();
    service.signal("HUP");
    let mut logged = false;
    for _ in 0..100 {
        if service.log().contains("reload refused") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "{}", service.log());
    assert!(
        service.log().contains("not a configured client"),
        "the log says why"
    );
    assert_eq!(
        service.assertion(newcomer, "ecw").await.unwrap().status(),
        200
    );
    assert_eq!(
        service
            .assertion(EXPORT_TOKEN, "epic")
            .await
            .unwrap()
            .status(),
        200
    );
    service.stop();
}

/// A first start killed (SIGKILL) the moment each file it makes appears must leave either
/// nothing or a complete installation: the next start always comes up, with two keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_killed_at_any_step_starts_cleanly_next_time() {
    if crate::helpers::sqlite_only("the files of a SQLite first start") {
        return;
    }
    for trigger in ["admin.token", "master.key", "jwksd.db", "jwksd.db.init"] {
        let dir = tempfile::tempdir().unwrap();
        // The default RSA key set on purpose: its key generation spaces the files out, so
        // the kill lands at each step rather than after a start already complete.
        std::fs::write(dir.path().join("jwksd.toml"), "").unwrap();
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_jwksd"))
                .args(["serve", "--config", "jwksd.toml"])
                .current_dir(dir.path())
                .env("JWKSD_SERVER__PUBLIC_LISTEN", "127.0.0.1:0")
                .env("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let watched = dir.path().join("data").join(trigger);
        let pid = child.id();
        let killed = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if watched.exists() {
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", &pid.to_string()])
                        .status();
                    let _ = child.wait();
                    return true;
                }
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            false
        })
        .await
        .unwrap();
        let _ = killed; // jwksd.db.init exists only with the fix; then the kill lands there
        let service = Service::start(dir.path()).await;
        let jwks: Value = service
            .http
            .get(format!("{}/.well-known/jwks.json", service.public))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            jwks["keys"].as_array().unwrap().len(),
            2,
            "after a kill at {trigger}: {jwks}"
        );
        service.stop();
    }
}

/// `jwksd healthcheck` is a probe of the status alone: any 2xx passes, whatever its body
/// (as it always did), and anything else fails.
#[test]
fn healthcheck_passes_on_any_2xx_and_fails_on_anything_else() {
    use std::io::{Read, Write};
    for (answer, passes) in [
        ("200 OK", true),
        ("202 Accepted", true),
        ("503 Service Unavailable", false),
        ("404 Not Found", false),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/readyz", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            // Not jwksd's health answer: a page a proxy might send.
            let body = "<html>not jwksd</html>";
            let _ = write!(
                stream,
                "HTTP/1.1 {answer}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let probe = Command::new(env!("CARGO_BIN_EXE_jwksd"))
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap();
        server.join().unwrap();
        assert_eq!(
            probe.status.success(),
            passes,
            "{answer}: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
}
