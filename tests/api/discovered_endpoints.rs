//! Hardening finding 7: a SMART discovery document must not be able to point jwksd at
//! this host's own services. The token endpoint it names obeys the https-or-loopback rule
//! of configured URLs, and may be on a loopback host only when `fhir_base_url` itself is.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, TestApp, EC_DEFAULT};
use crate::signing::sha256_hex;
use crate::upstream::{RawAnswer, RawBody, RawServer};

const CALLER: &str = "discovery-caller-token-0123456789abcdefghijklmn";

/// A client with no configured token endpoint: it is discovered from `fhir_base_url`.
fn discovery_config(fhir_base_url: &str) -> String {
    format!(
        r#"{EC_DEFAULT}
[clients.test]
client_id = "discovery-client"
fhir_base_url = "{fhir_base_url}"
scope = "system/Patient.read"
[callers.svc]
token_sha256 = "{}"
clients = ["test"]
"#,
        sha256_hex(CALLER)
    )
}

/// A server whose discovery document names `token_endpoint` and whose /token answers.
async fn discovery_server(token_endpoint: String) -> RawServer {
    RawServer::start(move |path| {
        if path.ends_with("/.well-known/smart-configuration") {
            let doc = json!({
                "token_endpoint": token_endpoint,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            });
            RawAnswer::json(200, RawBody::Fixed(serde_json::to_vec(&doc).unwrap()))
        } else {
            let token =
                json!({"access_token": "leaked", "token_type": "Bearer", "expires_in": 300});
            RawAnswer::json(200, RawBody::Fixed(serde_json::to_vec(&token).unwrap()))
        }
    })
    .await
}

async fn assertions_issued(app: &TestApp) -> usize {
    let audit: Value = app
        .admin(
            reqwest::Method::GET,
            "/admin/v1/audit?event=assertion.issued",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    audit["records"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_discovered_loopback_token_endpoint_is_refused_when_fhir_base_url_is_not_loopback() {
    // The EHR is "ehr.example" (resolved to a local test server by this client only), so
    // its fhir_base_url is not loopback; its discovery document names this host's services.
    for endpoint in [
        "http://127.0.0.1:8081/v1/tokens",
        "http://localhost:8081/admin/v1/keysets",
        "https://localhost/token",
        "http://127.8.9.10:8081/token",
        "http://2130706433:8081/token",
        "http://0x7f.1:8081/token",
        "http://0.0.0.0:8081/token",
        "http://[::1]:8081/token",
        "http://[::]:8081/token",
        "http://[::ffff:127.0.0.1]:8081/token",
        "https://admin.localhost/token",
        "http://LocalHost.:8081/token",
    ] {
        let server = discovery_server(endpoint.to_owned()).await;
        jwksd::tokens::install_crypto_provider();
        let http = reqwest::Client::builder()
            .resolve("ehr.example", server.addr)
            .build()
            .unwrap();
        let base = format!("http://ehr.example:{}/fhir", server.addr.port());
        let base = reqwest::Url::parse(&base).unwrap();
        let refused = jwksd::tokens::discovery::discover(&http, &base).await;
        let err = refused
            .err()
            .unwrap_or_else(|| panic!("{endpoint} was accepted from a non-loopback EHR"))
            .to_string();
        assert!(err.contains("loopback"), "{endpoint}: {err}");
        assert_eq!(server.paths(), ["/fhir/.well-known/smart-configuration"]);
    }
    // An https endpoint elsewhere is what discovery is for.
    let server = discovery_server("https://auth.ehr.example/token".to_owned()).await;
    let http = reqwest::Client::builder()
        .resolve("ehr.example", server.addr)
        .build()
        .unwrap();
    let base = format!("http://ehr.example:{}/fhir", server.addr.port());
    let base = reqwest::Url::parse(&base).unwrap();
    let config = jwksd::tokens::discovery::discover(&http, &base)
        .await
        .unwrap();
    assert_eq!(config.token_endpoint, "https://auth.ehr.example/token");
}

#[tokio::test]
async fn a_refused_discovered_endpoint_is_a_clear_token_failure_and_nothing_is_signed() {
    let long = format!("http://ehr.example/{}", "a".repeat(5000));
    for (endpoint, why) in [
        ("http://ehr.example/token".to_owned(), "https"),
        ("ftp://127.0.0.1/token".to_owned(), "https"),
        (
            "https://user:secret@ehr.example/token".to_owned(),
            "credentials",
        ),
        ("/token".to_owned(), "absolute"),
        (long.clone(), "https"),
    ] {
        let server = discovery_server(endpoint.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = discovery_config(&format!("{}/fhir", server.base));
        let app = spawn_app_with(dir.path(), &config).await;
        let response = app
            .http
            .post(format!("{}/v1/tokens", app.private))
            .bearer_auth(CALLER)
            .json(&json!({"client_id": "test"}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 502).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!(
                "{}/fhir/.well-known/smart-configuration",
                server.base
            )),
            "the detail names the discovery document: {detail}"
        );
        assert!(
            detail.contains(&endpoint[..endpoint.len().min(100)]),
            "the detail names the refused URL: {detail}"
        );
        assert!(detail.contains(why), "{endpoint}: {detail}");
        assert!(detail.len() < 1000, "an upstream value is echoed unbounded");
        assert_eq!(assertions_issued(&app).await, 0, "no assertion was signed");
        assert!(
            !server.paths().iter().any(|p| p.contains("token")),
            "nothing was sent to the refused endpoint: {:?}",
            server.paths()
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_loopback_fhir_base_url_may_discover_a_loopback_token_endpoint() {
    // Development and tests: both on this host, plain http.
    let token_server = discovery_server(String::new()).await;
    let endpoint = format!("http://localhost:{}/token", token_server.addr.port());
    let server = discovery_server(endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let config = discovery_config(&format!("{}/fhir", server.base));
    let app = spawn_app_with(dir.path(), &config).await;
    let response = app
        .http
        .post(format!("{}/v1/tokens", app.private))
        .bearer_auth(CALLER)
        .json(&json!({"client_id": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(token_server.paths(), ["/token"]);
    app.stop().await;
}
