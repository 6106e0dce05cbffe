//! Starting jwksd in-process on free ports with a temporary data directory, and a typed
//! client for what the tests ask of it.

use std::path::Path;
use std::sync::Arc;

use jwksd::app::{Application, StartError};
use jwksd::config::Config;
use jwksd::keyring::Keyring;
use serde_json::Value;

pub struct TestApp {
    pub public: String,
    pub private: String,
    pub admin_token: String,
    pub keyring: Arc<Keyring>,
    pub http: reqwest::Client,
    stop: Option<[actix_web::dev::ServerHandle; 2]>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Loads a configuration the way `jwksd serve` does, with ports and data dir for a test.
pub fn test_config(data_dir: &Path, toml: &str) -> Result<Config, jwksd::config::ConfigError> {
    test_config_on(data_dir, toml, 0)
}

/// As [`test_config`], with the public listener on `public_port` (0: any free port).
pub fn test_config_on(
    data_dir: &Path,
    toml: &str,
    public_port: u16,
) -> Result<Config, jwksd::config::ConfigError> {
    let path = data_dir.join("test-config.toml");
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&path, toml).unwrap();
    let env = [
        (
            "JWKSD_SERVER__PUBLIC_LISTEN",
            format!("127.0.0.1:{public_port}"),
        ),
        ("JWKSD_SERVER__PRIVATE_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "JWKSD_SERVER__DATA_DIR",
            data_dir.join("data").display().to_string(),
        ),
    ];
    Config::load(Some(&path), env.map(|(k, v)| (k.to_owned(), v)))
}

/// A port that was free a moment ago (for URLs that must be known before jwksd starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A clock the test moves: the wall clock plus an offset in seconds.
#[derive(Clone, Default)]
pub struct TestClock(Arc<std::sync::atomic::AtomicI64>);

impl TestClock {
    pub fn advance(&self, seconds: i64) {
        self.0
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn clock(&self) -> jwksd::Clock {
        let offset = self.0.clone();
        Arc::new(move || jwksd::unix_now() + offset.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Starts jwksd with its public listener on `public_port` and the token cache on `clock`.
pub async fn spawn_app_on(dir: &Path, toml: &str, public_port: u16, clock: &TestClock) -> TestApp {
    let config = test_config_on(dir, toml, public_port).expect("test config is valid");
    let app = match Application::build_with_clock(config, clock.clock()).await {
        Ok(app) => app,
        Err(e) => panic!("jwksd did not start: {e}"),
    };
    into_test_app(app)
}

/// Builds the application on `dir` without starting it, to observe start-up refusals.
pub async fn try_build(dir: &Path, toml: &str) -> Result<Application, StartError> {
    Application::build(test_config(dir, toml).expect("test config is valid")).await
}

pub async fn spawn_app(dir: &Path) -> TestApp {
    spawn_app_with(dir, "").await
}

pub async fn spawn_app_with(dir: &Path, toml: &str) -> TestApp {
    let app = match try_build(dir, toml).await {
        Ok(app) => app,
        Err(e) => panic!("jwksd did not start: {e}"),
    };
    into_test_app(app)
}

pub fn into_test_app(app: Application) -> TestApp {
    let public = format!("http://{}", app.public_addr());
    let private = format!("http://{}", app.private_addr());
    let admin_token = app.admin_token().expect("generated admin token").to_owned();
    let keyring = app.keyring();
    let stop = Some(app.stop_handles());
    let task = Some(tokio::spawn(app.run_until_stopped()));
    TestApp {
        public,
        private,
        admin_token,
        keyring,
        http: http_client(),
        stop,
        task,
    }
}

/// A plain HTTP client for talking to jwksd (no redirects followed).
pub fn http_client() -> reqwest::Client {
    jwksd::tokens::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestApp {
    /// Stops both listeners and waits until they are closed.
    pub async fn stop(mut self) {
        if let Some(handles) = self.stop.take() {
            for handle in handles {
                handle.stop(true).await;
            }
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub async fn get_public(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.public))
            .send()
            .await
            .unwrap()
    }

    pub async fn jwks(&self, keyset: &str) -> Value {
        let response = self.get_public(&format!("/jwks/{keyset}.json")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn kids(&self, keyset: &str) -> Vec<String> {
        self.jwks(keyset).await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.private))
            .bearer_auth(&self.admin_token)
    }

    pub async fn keys(&self, keyset: &str) -> Vec<Value> {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/keysets/{keyset}/keys"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["keys"].as_array().unwrap().clone()
    }

    /// The kid of the key in `state` (newest one).
    pub async fn kid_in_state(&self, keyset: &str, state: &str) -> Option<String> {
        self.keys(keyset)
            .await
            .into_iter()
            .find(|k| k["state"] == state)
            .map(|k| k["kid"].as_str().unwrap().to_owned())
    }

    pub async fn rotate(&self, keyset: &str, force: bool) -> reqwest::Response {
        let query = if force { "?force=true" } else { "" };
        self.admin(
            reqwest::Method::POST,
            &format!("/admin/v1/keysets/{keyset}/rotate{query}"),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn revoke(&self, kid: &str) -> reqwest::Response {
        self.admin(
            reqwest::Method::POST,
            &format!("/admin/v1/keys/{kid}/revoke"),
        )
        .send()
        .await
        .unwrap()
    }
}

/// Asserts that `response` is an RFC 9457 problem with `status`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
