//! The log of the real `jwksd` process: JSON lines that parse, one line per request with
//! its request id (the one in the `X-Request-Id` header and in problem bodies) and never a
//! token or an assertion; text without colour when written to a file; the audit head after
//! a key event; and SIGTERM during a signing burst: exit 0, every delivered assertion in
//! the audit trail.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, wait_until_listening, KillOnDrop};
use crate::process::audit_verify;
use crate::signing::{signing_config, BILLING_TOKEN};

/// A `jwksd serve` child on ports it bound itself, its stderr in `<dir>/jwksd.log`.
pub struct Jwksd {
    child: KillOnDrop,
    pub public: String,
    pub private: String,
    pub dir: PathBuf,
    pub http: reqwest::Client,
}

impl Jwksd {
    /// Starts jwksd on `<dir>/jwksd.toml` with `env` added, and waits until it is ready.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Jwksd {
        let log_path = dir.join("jwksd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_jwksd"))
                .args(["serve", "--config", "jwksd.toml"])
                .current_dir(dir)
                .env("JWKSD_SERVER__PUBLIC_LISTEN", "127.0.0.1:0")
                .env("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0")
                .env("JWKSD_LOG", "info")
                .env_remove("NO_COLOR")
                .envs(crate::helpers::backend_env(dir))
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let (public, private) = wait_until_listening(&mut child, read).await;
        let service = Jwksd {
            child,
            public: format!("http://{public}"),
            private: format!("http://{private}"),
            dir: dir.to_owned(),
            http: crate::helpers::http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = service
                .http
                .get(format!("{}/readyz", service.public))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return service;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("jwksd did not become ready: {}", service.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("jwksd.log")).unwrap_or_default()
    }

    /// Waits (at most `within`) until the log has a line `matches` accepts; returns it.
    pub async fn wait_for_line(&self, within: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|l| matches(l)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no such line in\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to end (at most 60 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "jwksd did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

fn configure(dir: &Path) {
    std::fs::write(dir.join("jwksd.toml"), signing_config("")).unwrap();
}

#[tokio::test]
async fn a_json_log_line_parses_carries_the_request_id_and_holds_no_token_or_assertion() {
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path());
    let service = Jwksd::start(dir.path(), &[("JWKSD_SERVER__LOG_FORMAT", "json")]).await;
    let response = service
        .http
        .post(format!("{}/v1/assertions", service.private))
        .bearer_auth(BILLING_TOKEN)
        .json(&json!({"client_id": "ecw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(request_id.len(), 16, "{request_id}");
    let body: Value = response.json().await.unwrap();
    let assertion = body["client_assertion"].as_str().unwrap().to_owned();

    let line = service
        .wait_for_line(Duration::from_secs(5), |l| l.contains(&request_id))
        .await;
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["message"], "request", "{line}");
    assert_eq!(entry["request_id"], request_id.as_str());
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["path"], "/v1/assertions");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["caller"], "billing");
    let duration = entry["duration"].as_str().unwrap();
    assert!(
        duration.ends_with("ms") || duration.ends_with("µs") || duration.ends_with('s'),
        "{duration}"
    );

    let log = service.log();
    for line in log.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    assert!(
        !log.contains(BILLING_TOKEN),
        "the caller token is in the log"
    );
    // No part of the signed assertion either: its signature is its most telling part.
    let signature = assertion.rsplit('.').next().unwrap();
    assert!(
        !log.contains(&assertion) && !log.contains(signature),
        "{log}"
    );
    assert!(!log.contains("Some("), "{log}");
    assert!(
        !log.contains(&service.admin_token()),
        "the admin token is in the log"
    );
}

#[tokio::test]
async fn a_text_log_written_to_a_file_has_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path());
    let service = Jwksd::start(dir.path(), &[]).await;
    let refused = service
        .http
        .post(format!("{}/v1/assertions", service.private))
        .bearer_auth("not-a-caller-token")
        .json(&json!({"client_id": "ecw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let request_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let line = service
        .wait_for_line(Duration::from_secs(5), |l| l.contains(&request_id))
        .await;
    assert!(line.contains("status=401"), "{line}");
    let log = service.log();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
    assert!(!log.contains("not-a-caller-token"), "{log}");
}

#[tokio::test]
async fn a_well_formed_request_id_is_kept_and_problem_bodies_carry_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let sent = |id: &'static str| {
        app.http
            .post(format!("{}/v1/assertions", app.private))
            .header("X-Request-Id", id)
            .json(&json!({"client_id": "ecw"}))
            .send()
    };
    let kept = sent("proxy-7f3a.42:1").await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "proxy-7f3a.42:1");
    let problem = assert_problem(kept, 401).await;
    assert_eq!(problem["request_id"], "proxy-7f3a.42:1", "{problem}");

    // Not an id jwksd can echo or log as it is: a fresh one instead.
    for unusable in ["has space", "x\"y", &"a".repeat(65)] {
        let response = app
            .http
            .get(format!("{}/jwks/nope.json", app.public))
            .header("X-Request-Id", unusable)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, unusable);
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let problem = assert_problem(response, 404).await;
        assert_eq!(problem["request_id"], id.as_str());
    }
    // Answers that are not problems carry it too.
    let jwks = app.get_public("/.well-known/jwks.json").await;
    assert!(jwks.headers().contains_key("x-request-id"));
    app.stop().await;
}

#[tokio::test]
async fn the_audit_head_is_logged_after_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path());
    let service = Jwksd::start(dir.path(), &[("JWKSD_SERVER__LOG_FORMAT", "json")]).await;
    let rotated = service
        .http
        .post(format!(
            "{}/admin/v1/keysets/default/rotate?force=true",
            service.private
        ))
        .bearer_auth(service.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let line = service
        .wait_for_line(Duration::from_secs(10), |l| {
            l.contains("\"message\":\"audit head\"") && l.contains("key event")
        })
        .await;
    let entry: Value = serde_json::from_str(&line).unwrap();
    // The head logged is the store's: the newest record of the trail, by seq and hash.
    let records: Value = service
        .http
        .get(format!("{}/admin/v1/audit?limit=1000", service.private))
        .bearer_auth(service.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = records["records"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(entry["seq"], newest["seq"], "{line}");
    assert_eq!(entry["hash"], newest["hash"], "{line}");
    assert!(
        newest["event"].as_str().unwrap().starts_with("key."),
        "{newest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_signing_burst_exits_0_and_every_delivered_assertion_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path());
    let mut service = Jwksd::start(dir.path(), &[]).await;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, url, received) = (
            service.http.clone(),
            format!("{}/v1/assertions", service.private),
            received.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Bounded: at most 15 s and 1000 requests per worker; ends at the first failure
            // (the listener closed).
            let deadline = Instant::now() + Duration::from_secs(15);
            for _ in 0..1000 {
                if Instant::now() > deadline {
                    break;
                }
                let Ok(response) = http
                    .post(&url)
                    .bearer_auth(BILLING_TOKEN)
                    .json(&json!({"client_id": "ecw"}))
                    .send()
                    .await
                else {
                    break;
                };
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
    let started = Instant::now();
    while received.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = service.terminate();
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(
        status.success(),
        "jwksd exited with {status}: {}",
        service.log()
    );
    assert!(service.log().contains("jwksd stopped"), "{}", service.log());
    let delivered: Vec<String> = received.lock().unwrap().clone();
    assert!(delivered.len() >= 100, "only {} delivered", delivered.len());

    let restarted = crate::process::Service::start(dir.path()).await;
    let audited = restarted.audited_jtis().await;
    let missing = delivered.iter().filter(|j| !audited.contains(*j)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} delivered assertions not audited",
        delivered.len()
    );
    restarted.stop();
    let (ok, text) = audit_verify(dir.path());
    assert!(ok, "{text}");
}
