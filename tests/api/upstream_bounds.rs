//! Hardening finding 8: every upstream answer is read up to a limit, and callers cannot
//! grow the token cache with scope strings of their choosing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, TestApp, EC_DEFAULT};
use crate::signing::sha256_hex;
use crate::upstream::{padded_json, FakeTokenServer, RawAnswer, RawBody, RawServer, Scripted};

const CALLER: &str = "bounds-caller-token-0123456789abcdefghijklmnopqr";
/// Far above every limit jwksd applies to token and discovery answers.
const HUGE: usize = 4 * 1024 * 1024;

fn config(clients: &str) -> String {
    format!(
        "{EC_DEFAULT}{clients}\n[callers.svc]\ntoken_sha256 = \"{}\"\nclients = [\"open\", \"fixed\"]\n",
        sha256_hex(CALLER)
    )
}

async fn token(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/tokens", app.private))
        .bearer_auth(CALLER)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn app_for_token_endpoint(dir: &std::path::Path, endpoint: &str) -> TestApp {
    let clients = format!(
        "[clients.open]\nclient_id = \"open-client\"\ntoken_endpoint = \"{endpoint}\"\n\
         [clients.fixed]\nclient_id = \"fixed-client\"\ntoken_endpoint = \"{endpoint}\"\n\
         scope = \"system/Patient.read\"\n"
    );
    spawn_app_with(dir, &config(&clients)).await
}

fn token_json() -> Value {
    json!({"access_token": "big", "token_type": "Bearer", "expires_in": 300})
}

#[tokio::test]
async fn an_oversized_token_answer_is_refused_not_read_whole_or_relayed() {
    let server = RawServer::start(|_| {
        RawAnswer::json(200, RawBody::Chunked(padded_json(token_json(), HUGE)))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_for_token_endpoint(dir.path(), &format!("{}/token", server.base)).await;
    let problem = assert_problem(token(&app, json!({"client_id": "fixed"})).await, 502).await;
    let description = problem["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("larger than 65536 bytes"), "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn a_token_answer_that_announces_too_much_is_refused_at_once() {
    let server =
        RawServer::start(|_| RawAnswer::json(200, RawBody::DeclareAndHang(50 * 1024 * 1024))).await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_for_token_endpoint(dir.path(), &format!("{}/token", server.base)).await;
    let started = Instant::now();
    let problem = assert_problem(token(&app, json!({"client_id": "fixed"})).await, 502).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "jwksd waited {:?} for a body it would refuse anyway",
        started.elapsed()
    );
    let description = problem["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains("Content-Length: 52428800"),
        "{problem}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_discovery_document_is_refused_before_anything_is_signed() {
    let server = RawServer::start(|path| {
        if path.ends_with("smart-configuration") {
            let doc = json!({"token_endpoint": "http://127.0.0.1:1/token"});
            RawAnswer::json(200, RawBody::Chunked(padded_json(doc, HUGE)))
        } else {
            RawAnswer::json(
                200,
                RawBody::Fixed(serde_json::to_vec(&token_json()).unwrap()),
            )
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clients = format!(
        "[clients.open]\nclient_id = \"open-client\"\nfhir_base_url = \"{}/fhir\"\n\
         [clients.fixed]\nclient_id = \"fixed-client\"\nfhir_base_url = \"{}/fhir\"\n",
        server.base, server.base
    );
    let app = spawn_app_with(dir.path(), &config(&clients)).await;
    let problem = assert_problem(token(&app, json!({"client_id": "fixed"})).await, 502).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("larger than 65536 bytes"), "{detail}");
    assert!(
        detail.contains("/fhir/.well-known/smart-configuration"),
        "{detail}"
    );
    assert_eq!(server.paths(), ["/fhir/.well-known/smart-configuration"]);
    app.stop().await;
}

#[tokio::test]
async fn doctor_reads_a_jwks_only_up_to_its_limit() {
    let server = RawServer::start(|path| {
        if path.starts_with("/jwks") {
            RawAnswer::json(
                200,
                RawBody::Chunked(padded_json(json!({"keys": []}), HUGE)),
            )
        } else {
            RawAnswer::json(
                200,
                RawBody::Fixed(serde_json::to_vec(&token_json()).unwrap()),
            )
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clients = format!(
        "[server]\npublic_url = \"{}\"\n\
         [clients.open]\nclient_id = \"open-client\"\ntoken_endpoint = \"{}/token\"\n\
         [clients.fixed]\nclient_id = \"fixed-client\"\ntoken_endpoint = \"{}/token\"\n",
        server.base, server.base, server.base
    );
    let app = spawn_app_with(dir.path(), &config(&clients)).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .kill_on_drop(true)
        .args(["doctor", "--client", "fixed", "--json"])
        .env("JWKSD_SERVER", &app.private)
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let checks: Vec<Value> = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}"));
    let kids = checks.iter().find(|c| c["check"] == "jwks_kids").unwrap();
    assert_eq!(kids["verdict"], "fail", "{kids}");
    assert!(
        kids["detail"]
            .as_str()
            .unwrap()
            .contains("larger than 1048576 bytes"),
        "{kids}"
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_scope_a_caller_scope_must_be_system_scopes_of_bounded_size() {
    let fake = FakeTokenServer::start().await;
    fake.always(Scripted::ok("t"));
    let dir = tempfile::tempdir().unwrap();
    let app = app_for_token_endpoint(dir.path(), &fake.token_endpoint()).await;
    let many: Vec<String> = (0..40).map(|i| format!("system/R{i}.read")).collect();
    for scope in [
        "openid profile".to_owned(),
        "system/Patient.read launch".to_owned(),
        "system/".to_owned(),
        "system/Patient.read\u{1}".to_owned(),
        "system/Pat\"ient.read".to_owned(),
        format!("system/{}.read", "P".repeat(300)),
        many.join(" "),
    ] {
        let problem = assert_problem(
            token(&app, json!({"client_id": "open", "scope": scope})).await,
            422,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains("scope"),
            "{problem}"
        );
    }
    assert!(fake.received().is_empty(), "nothing was sent upstream");
    // SMART v1 and v2 scopes, with v2 query parameters, are fine.
    let response = token(
        &app,
        json!({"client_id": "open", "scope": "system/Patient.read system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn distinct_caller_scopes_cannot_grow_the_cache_or_evict_other_clients_tokens() {
    let fake = FakeTokenServer::start().await;
    fake.always(Scripted::ok("t"));
    let dir = tempfile::tempdir().unwrap();
    let app = app_for_token_endpoint(dir.path(), &fake.token_endpoint()).await;
    let cache = |response: &reqwest::Response| {
        assert_eq!(response.status(), 200);
        response.headers()["x-jwksd-cache"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // Another client's token, and an early scope set of the open client.
    assert_eq!(
        cache(&token(&app, json!({"client_id": "fixed"})).await),
        "miss"
    );
    let first = json!({"client_id": "open", "scope": "system/First.read"});
    assert_eq!(cache(&token(&app, first.clone()).await), "miss");
    // A caller walks through distinct scope sets of the open client.
    for i in 0..40 {
        let scope = format!("system/R{i}.read");
        let response = token(&app, json!({"client_id": "open", "scope": scope})).await;
        assert_eq!(cache(&response), "miss");
    }
    // The open client keeps only its most recently used scope sets...
    assert_eq!(
        cache(&token(&app, first).await),
        "miss",
        "the open client's cache is bounded"
    );
    let recent = json!({"client_id": "open", "scope": "system/R39.read"});
    assert_eq!(cache(&token(&app, recent).await), "hit");
    // ...and the other client's token was never touched.
    assert_eq!(
        cache(&token(&app, json!({"client_id": "fixed"})).await),
        "hit"
    );
    app.stop().await;
    fake.stop().await;
}
