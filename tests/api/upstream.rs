//! The token endpoints jwksd talks to in tests: the real node-oidc-provider, and a small
//! fake for faults the real one cannot produce (429, 503, redirects, a Date far off, vendor
//! error wording).

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::KillOnDrop;

/// node-oidc-provider on a loopback port it bound itself (and reports on its first line of
/// stdout), configured for one backend client; killed when dropped.
pub struct OAuthServer {
    _child: KillOnDrop,
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
        let mut child = KillOnDrop(
            Command::new("node")
                .arg("server.mjs")
                .current_dir(&dir)
                .env("JWKS_URI", jwks_uri)
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("node is installed (scripts/test installs it)"),
        );
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the OAuth server did not start: {line:?}"));
        OAuthServer {
            _child: child,
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

/// What [`RawServer`] sends after the status line and headers.
#[derive(Clone)]
pub enum RawBody {
    /// With `Content-Length`.
    Fixed(Vec<u8>),
    /// With `Transfer-Encoding: chunked`, 16 KiB per chunk, so no length is known up front.
    Chunked(Vec<u8>),
    /// Announces `Content-Length: N`, then sends nothing and holds the connection open.
    DeclareAndHang(u64),
}

/// One answer of [`RawServer`].
#[derive(Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: RawBody,
}

impl RawAnswer {
    pub fn json(status: u16, body: RawBody) -> Self {
        RawAnswer {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// An HTTP/1.1 server written on a bare socket, for answers a well-behaved framework will
/// not send: bodies far larger than any token answer, a `Content-Length` that never
/// arrives. `answer` maps a request path to the answer; every request path is recorded.
pub struct RawServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    pub async fn start(answer: impl Fn(&str) -> RawAnswer + Send + Sync + 'static) -> RawServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let seen = paths.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = answer.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // One request per connection: read the head (and ignore the body).
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut byte).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&byte[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                    seen.lock().unwrap().push(path.clone());
                    let reply = answer(&path);
                    let mut out = format!(
                        "HTTP/1.1 {} Whatever\r\nContent-Type: {}\r\nConnection: close\r\n",
                        reply.status, reply.content_type
                    );
                    match &reply.body {
                        RawBody::Fixed(b) => {
                            out.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()))
                        }
                        RawBody::Chunked(_) => out.push_str("Transfer-Encoding: chunked\r\n\r\n"),
                        RawBody::DeclareAndHang(n) => {
                            out.push_str(&format!("Content-Length: {n}\r\n\r\n"))
                        }
                    }
                    if socket.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = match reply.body {
                        RawBody::Fixed(b) => socket.write_all(&b).await,
                        RawBody::Chunked(b) => {
                            for chunk in b.chunks(16 * 1024) {
                                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                                framed.extend_from_slice(chunk);
                                framed.extend_from_slice(b"\r\n");
                                if socket.write_all(&framed).await.is_err() {
                                    return;
                                }
                            }
                            socket.write_all(b"0\r\n\r\n").await
                        }
                        RawBody::DeclareAndHang(_) => {
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            Ok(())
                        }
                    };
                });
            }
        });
        RawServer {
            base: format!("http://{addr}"),
            addr,
            paths,
            task,
        }
    }

    /// The paths of every request received so far.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON object of about `size` bytes: `members` plus a `padding` string member.
pub fn padded_json(members: Value, size: usize) -> Vec<u8> {
    let mut object = members;
    object["padding"] = Value::String("x".repeat(size));
    serde_json::to_vec(&object).unwrap()
}
