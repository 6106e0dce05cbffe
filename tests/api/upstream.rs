//! The token endpoints jwksd talks to in tests: the real node-oidc-provider, and a small
//! fake for faults the real one cannot produce (429, 503, redirects, a Date far off, vendor
//! error wording).

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// node-oidc-provider on a free loopback port, configured for one backend client.
pub struct OAuthServer {
    child: Child,
    pub base: String,
    pub token_endpoint: String,
    pub fhir_base_url: String,
}

impl OAuthServer {
    pub fn start(jwks_uri: &str, env: &[(&str, &str)]) -> OAuthServer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth-server");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test authorization server is not installed: run `npm ci --prefix tests/oauth-server` (scripts/test does)"
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("JWKS_URI", jwks_uri)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is installed");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the OAuth server did not start: {line:?}"));
        OAuthServer {
            child,
            base: started["issuer"].as_str().unwrap().to_owned(),
            token_endpoint: started["token_endpoint"].as_str().unwrap().to_owned(),
            fhir_base_url: started["fhir_base_url"].as_str().unwrap().to_owned(),
        }
    }

    /// Token requests the server has received.
    pub async fn token_requests(&self) -> u64 {
        let body: Value = crate::helpers::http_client()
            .get(format!("{}/test/token-requests", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["count"].as_u64().unwrap()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scripted answer of the fake token endpoint.
#[derive(Clone)]
pub struct Scripted {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

impl Scripted {
    pub fn ok(token: &str) -> Self {
        Scripted {
            status: 200,
            body: json!({"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "system/Patient.read"}),
            headers: vec![],
        }
    }

    pub fn error(status: u16, error: &str, description: &str) -> Self {
        Scripted {
            status,
            body: json!({"error": error, "error_description": description}),
            headers: vec![],
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Default)]
struct FakeState {
    script: Mutex<VecDeque<Scripted>>,
    fallback: Mutex<Option<Scripted>>,
    received: Mutex<Vec<HashMap<String, String>>>,
    redirected_hits: Mutex<u32>,
}

/// A token endpoint that answers from a script and records what it received.
pub struct FakeTokenServer {
    pub base: String,
    state: Arc<FakeState>,
    handle: actix_web::dev::ServerHandle,
}

async fn token(
    state: web::Data<FakeState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    state.received.lock().unwrap().push(form.into_inner());
    let next = state.script.lock().unwrap().pop_front();
    let answer = next
        .or_else(|| state.fallback.lock().unwrap().clone())
        .unwrap_or_else(|| Scripted::error(500, "server_error", "no script"));
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
    for (name, value) in answer.headers {
        response.insert_header((name, value));
    }
    response.json(answer.body)
}

async fn redirected(state: web::Data<FakeState>) -> HttpResponse {
    *state.redirected_hits.lock().unwrap() += 1;
    HttpResponse::Ok()
        .json(json!({"access_token": "stolen", "token_type": "Bearer", "expires_in": 300}))
}

async fn smart_configuration(req: HttpRequest) -> HttpResponse {
    let host = req.connection_info().host().to_owned();
    HttpResponse::Ok().json(json!({
        "token_endpoint": format!("http://{host}/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    }))
}

impl FakeTokenServer {
    pub async fn start() -> FakeTokenServer {
        let state = web::Data::new(FakeState::default());
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .route("/token", web::post().to(token))
                .route("/elsewhere", web::post().to(redirected))
                .route(
                    "/fhir/.well-known/smart-configuration",
                    web::get().to(smart_configuration),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeTokenServer {
            base,
            state: state.into_inner(),
            handle,
        }
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.base)
    }

    pub fn fhir_base_url(&self) -> String {
        format!("{}/fhir", self.base)
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn always(&self, answer: Scripted) {
        *self.state.fallback.lock().unwrap() = Some(answer);
    }

    /// The form fields of every token request received.
    pub fn received(&self) -> Vec<HashMap<String, String>> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn redirected_hits(&self) -> u32 {
        *self.state.redirected_hits.lock().unwrap()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
