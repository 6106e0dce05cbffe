//! `POST /v1/tokens`, `jwksd doctor` and `jwksd register`, against the real
//! node-oidc-provider and, for faults it cannot produce, a scripted fake.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, loopback_listener, spawn_app_on, url_of, KillOnDrop, TestApp, TestClock,
};
use crate::signing::sha256_hex;
use crate::upstream::{FakeTokenServer, OAuthServer, Scripted};

const CALLER: &str = "token-caller-token-0123456789abcdefghijklmnopq";

/// The `default` key set's algorithm for tests that are not about RSA: EC keys are quick
/// to make, and the test authorization server's discovery document lists ES384.
const EC_KEYS: &str = "alg = \"ES384\"";
/// The `default` key set on the default algorithm, RS384 (for the vendor kits).
const RSA_KEYS: &str = "";

fn token_config(
    token_endpoint: &str,
    fhir_base_url: &str,
    client_id: &str,
    public_url: &str,
) -> String {
    token_config_on(
        EC_KEYS,
        token_endpoint,
        fhir_base_url,
        client_id,
        public_url,
    )
}

fn token_config_on(
    default_alg: &str,
    token_endpoint: &str,
    fhir_base_url: &str,
    client_id: &str,
    public_url: &str,
) -> String {
    format!(
        r#"
[server]
public_url = "{public_url}"
[keysets.default]
{default_alg}
[keysets.other]
alg = "ES384"
[clients.test]
client_id = "{client_id}"
token_endpoint = "{token_endpoint}"
fhir_base_url = "{fhir_base_url}"
scope = "system/Patient.read system/Observation.read"
[callers.svc]
token_sha256 = "{}"
clients = ["test"]
"#,
        sha256_hex(CALLER)
    )
}

/// jwksd and the real authorization server, which fetches jwksd's `jwks_path`.
async fn with_real_server(
    dir: &std::path::Path,
    jwks_path: &str,
    env: &[(&str, &str)],
) -> (TestApp, OAuthServer, TestClock) {
    // The server must know jwksd's JWKS URL before jwksd starts: bind first.
    let public = loopback_listener();
    let oauth = OAuthServer::start(&format!("{}{jwks_path}", url_of(&public)), env);
    let clock = TestClock::default();
    let config = token_config(
        &oauth.token_endpoint,
        &oauth.fhir_base_url,
        "jwksd-test-client",
        &url_of(&public),
    );
    let app = spawn_app_on(dir, &config, public, &clock).await;
    (app, oauth, clock)
}

async fn with_fake_server(
    dir: &std::path::Path,
    client_id: &str,
) -> (TestApp, FakeTokenServer, TestClock) {
    with_fake_server_on(dir, client_id, EC_KEYS).await
}

async fn with_fake_server_on(
    dir: &std::path::Path,
    client_id: &str,
    default_alg: &str,
) -> (TestApp, FakeTokenServer, TestClock) {
    let fake = FakeTokenServer::start().await;
    let clock = TestClock::default();
    let public = loopback_listener();
    let config = token_config_on(
        default_alg,
        &fake.token_endpoint(),
        &fake.fhir_base_url(),
        client_id,
        &url_of(&public),
    );
    let app = spawn_app_on(dir, &config, public, &clock).await;
    (app, fake, clock)
}

async fn get_token(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/tokens", app.private))
        .bearer_auth(CALLER)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn token_ok(app: &TestApp, body: Value) -> (Value, String) {
    let response = get_token(app, body).await;
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-jwksd-cache"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.json().await.unwrap(), cache)
}

#[tokio::test]
async fn a_caller_gets_a_real_access_token_from_a_real_authorization_server_then_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (app, oauth, _) = with_real_server(dir.path(), "/.well-known/jwks.json", &[]).await;
    let (first, cache) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(cache, "miss");
    assert!(
        first["access_token"].as_str().unwrap().len() >= 20,
        "{first}"
    );
    assert_eq!(first["token_type"], "Bearer");
    let granted: HashSet<&str> = first["scope"].as_str().unwrap().split(' ').collect();
    assert_eq!(
        granted,
        HashSet::from(["system/Patient.read", "system/Observation.read"])
    );
    assert_eq!(first["expires_in"], 300);
    // By client_id instead of name, scopes in another order: the same cache entry.
    let (second, cache) = token_ok(
        &app,
        json!({"client_id": "jwksd-test-client", "scope": "system/Observation.read system/Patient.read"}),
    )
    .await;
    assert_eq!(cache, "hit");
    assert_eq!(second["access_token"], first["access_token"]);
    assert_eq!(oauth.token_requests().await, 1);
    // The upstream request carried an assertion that is in the audit trail.
    let audit: jwksd::api::AuditPage = app
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
    let records = &audit.records;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].caller.as_deref(), Some("svc"));
    assert_eq!(
        records[0].audience.as_deref(),
        Some(oauth.token_endpoint.as_str())
    );

    // `jwksd token` prints the (cached) access token for scripts.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .kill_on_drop(true)
        .args(["token", "--client", "test", "--server", &app.private])
        .env("JWKSD_CALLER_TOKEN", CALLER)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        first["access_token"].as_str().unwrap()
    );
    assert_eq!(oauth.token_requests().await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_for_one_client_and_scope_cause_exactly_one_upstream_request() {
    let dir = tempfile::tempdir().unwrap();
    let (app, oauth, _) = with_real_server(dir.path(), "/.well-known/jwks.json", &[]).await;
    let app = std::sync::Arc::new(app);
    let mut calls = Vec::new();
    for i in 0..100 {
        let app = app.clone();
        // Scope order and repetition do not matter: the cache key is the scope set.
        let scope = if i % 2 == 0 {
            "system/Observation.read system/Patient.read"
        } else {
            "system/Patient.read  system/Observation.read system/Patient.read"
        };
        calls.push(tokio::spawn(async move {
            token_ok(&app, json!({"client_id": "test", "scope": scope}))
                .await
                .0
        }));
    }
    let mut tokens = HashSet::new();
    for call in calls {
        tokens.insert(
            call.await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(
        oauth.token_requests().await,
        1,
        "exactly one upstream token request"
    );
}

#[tokio::test]
async fn cached_tokens_are_served_until_80_percent_of_their_life_then_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let (app, oauth, clock) = with_real_server(
        dir.path(),
        "/.well-known/jwks.json",
        &[("TOKEN_TTL", "300")],
    )
    .await;
    let (first, _) = token_ok(&app, json!({"client_id": "test"})).await;
    clock.advance(239);
    let (cached, cache) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(cache, "hit");
    assert_eq!(cached["access_token"], first["access_token"]);
    // 61, or 60 when the wall clock passed a whole second between the token being cached
    // and this request reading the clock (both are whole seconds): the failure seen once on
    // PostgreSQL, possible on either backend.
    let left = cached["expires_in"].as_i64().unwrap();
    assert!((60..=61).contains(&left), "expires_in counts down: {left}");
    clock.advance(2); // 241 s: past 80% of 300 s
    let (refreshed, cache) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(cache, "miss");
    assert_ne!(refreshed["access_token"], first["access_token"]);
    assert_eq!(oauth.token_requests().await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_rotation_drops_cached_tokens_and_a_kid_the_ehr_has_not_fetched_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (app, oauth, _) = with_real_server(dir.path(), "/.well-known/jwks.json", &[]).await;
    let (first, _) = token_ok(&app, json!({"client_id": "test"})).await;
    assert!(first["access_token"].is_string());

    // Rotation promotes the prepublished next key, which the server's cached JWKS already
    // holds: the token obtained with the old key is dropped and a new one obtained.
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let (second, cache) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(
        cache, "miss",
        "a token obtained with a retired key is never served"
    );
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(oauth.token_requests().await, 2);

    // A second forced rotation promotes a key made after the server fetched the JWKS
    // (which it caches for max-age, 1h): the server has not seen that kid.
    let new_kid = app.kid_in_state("default", "next").await.unwrap();
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let refused = get_token(&app, json!({"client_id": "test"})).await;
    let problem = assert_problem(refused, 502).await;
    assert_eq!(problem["classification"], "kid_not_yet_seen", "{problem}");
    assert_eq!(problem["error"], "invalid_client");
    assert_eq!(problem["upstream_status"], 401);
    assert_eq!(problem["diagnosis"]["kid"], new_kid.as_str());
    assert!(
        problem["diagnosis"]["kid_published_for_seconds"]
            .as_i64()
            .unwrap()
            < 60
    );
    assert_eq!(
        problem["diagnosis"]["audience"],
        oauth.token_endpoint.as_str()
    );
    assert_eq!(
        problem["diagnosis"]["scope"],
        "system/Observation.read system/Patient.read"
    );
    assert!(problem["fix"].as_str().unwrap().contains("prepublish"));
    assert_eq!(oauth.token_requests().await, 3);
    // Errors are never cached: the next call asks again.
    assert_problem(get_token(&app, json!({"client_id": "test"})).await, 502).await;
    assert_eq!(oauth.token_requests().await, 4);
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_scope_and_a_key_the_ehr_does_not_have_are_named() {
    // jwksd's client is configured with a scope the EHR does not grant it.
    let dir = tempfile::tempdir().unwrap();
    let public = loopback_listener();
    let oauth = OAuthServer::start(&format!("{}/.well-known/jwks.json", url_of(&public)), &[]);
    let config = token_config(
        &oauth.token_endpoint,
        &oauth.fhir_base_url,
        "jwksd-test-client",
        &url_of(&public),
    )
    .replace(
        "scope = \"system/Patient.read system/Observation.read\"",
        "scope = \"system/Patient.read system/Secret.read\"",
    );
    let app = spawn_app_on(dir.path(), &config, public, &TestClock::default()).await;
    let problem = assert_problem(
        get_token(
            &app,
            json!({"client_id": "test", "scope": "system/Secret.read"}),
        )
        .await,
        502,
    )
    .await;
    assert_eq!(problem["classification"], "invalid_scope", "{problem}");
    assert_eq!(problem["error"], "invalid_scope");
    app.stop().await;

    // The EHR has another JWKS URL registered: our (long-published) key is not in it. The
    // server says only "client authentication failed", and no token was ever obtained, so
    // the evidence cannot tell this from an unknown client_id: both are listed (see
    // tests/api/diagnosis.rs), with the JWKS URL's check.
    let dir = tempfile::tempdir().unwrap();
    let (app, _oauth, clock) = with_real_server(dir.path(), "/jwks/other.json", &[]).await;
    clock.advance(2 * 3600);
    let problem = assert_problem(get_token(&app, json!({"client_id": "test"})).await, 502).await;
    assert_eq!(problem["classification"], "undetermined", "{problem}");
    let unregistered = &problem["diagnosis"]["possible_causes"][1];
    assert_eq!(unregistered["cause"], "key_not_registered", "{problem}");
    assert!(unregistered["check"]
        .as_str()
        .unwrap()
        .contains("allow-listed"));
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_client_is_named_from_the_vendors_words() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "nobody").await;
    fake.always(Scripted::error(401, "invalid_client", "Client not found"));
    let problem = assert_problem(get_token(&app, json!({"client_id": "test"})).await, 502).await;
    assert_eq!(problem["classification"], "unknown_client", "{problem}");
    assert_eq!(problem["error_description"], "Client not found");
    assert_eq!(fake.received().len(), 1, "a 401 is not retried");
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn rate_limits_are_retried_with_a_new_assertion_each_time_honouring_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    fake.script([
        Scripted::error(429, "rate_limit_exceeded", "slow down").header("Retry-After", "1"),
        Scripted::error(503, "temporarily_unavailable", "busy").header("Retry-After", "1"),
        Scripted::ok("third-time-lucky"),
    ]);
    let started = std::time::Instant::now();
    let (token, _) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(token["access_token"], "third-time-lucky");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "Retry-After was honoured"
    );
    let received = fake.received();
    assert_eq!(received.len(), 3);
    let jtis: HashSet<String> = received
        .iter()
        .map(|form| {
            let jwt = &form["client_assertion"];
            let claims = jwt.split('.').nth(1).unwrap();
            let claims: Value = serde_json::from_slice(
                &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(form["grant_type"], "client_credentials");
            assert_eq!(
                form["client_assertion_type"],
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            );
            claims["jti"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 3, "every retry signs a new assertion");

    // Always rate limited: the budget runs out and the failure is named, with Retry-After.
    fake.always(
        Scripted::error(429, "rate_limit_exceeded", "too many").header("Retry-After", "30"),
    );
    let refused = get_token(
        &app,
        json!({"client_id": "test", "scope": "system/Observation.read"}),
    )
    .await;
    assert_eq!(refused.headers()["retry-after"], "30");
    let problem = assert_problem(refused, 502).await;
    assert_eq!(problem["classification"], "rate_limited");
    assert_eq!(
        problem["diagnosis"]["attempts"], 1,
        "a 30 s Retry-After exceeds the 20 s budget: no wait"
    );
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_within_a_budget_named_and_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    fake.always(Scripted::error(503, "server_error", "down").header("Retry-After", "0"));
    let problem = assert_problem(get_token(&app, json!({"client_id": "test"})).await, 502).await;
    assert_eq!(problem["classification"], "server_error");
    assert_eq!(problem["diagnosis"]["attempts"], 4);
    assert_eq!(fake.received().len(), 4);
    fake.always(Scripted::ok("recovered"));
    let (token, cache) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(
        (token["access_token"].as_str().unwrap(), cache.as_str()),
        ("recovered", "miss")
    );
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    fake.always(Scripted {
        status: 307,
        body: json!({}),
        headers: vec![("Location", format!("{}/elsewhere", fake.base))],
    });
    let problem = assert_problem(get_token(&app, json!({"client_id": "test"})).await, 502).await;
    assert_eq!(problem["upstream_status"], 307);
    assert_eq!(
        fake.redirected_hits(),
        0,
        "the assertion was not replayed to the redirect target"
    );
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn token_requests_are_refused_like_assertion_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    let url = format!("{}/v1/tokens", app.private);
    assert_problem(
        app.http
            .post(&url)
            .json(&json!({"client_id": "test"}))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_problem(
        app.http
            .post(&url)
            .bearer_auth(CALLER)
            .json(&json!({"client_id": "nope"}))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_problem(
        app.http
            .post(&url)
            .bearer_auth(CALLER)
            .json(&json!({"client_id": "test", "aud": "x"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_problem(
        app.http
            .post(&url)
            .bearer_auth(CALLER)
            .body("client_id=test")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    assert!(fake.received().is_empty());
    app.stop().await;
    fake.stop().await;
}

// ---- jwksd doctor and jwksd register, as subprocesses against the running service ----

/// Runs the jwksd CLI against `app`, off the test's runtime (which also drives the app).
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwksd"));
    command
        .kill_on_drop(true)
        .args(args)
        .env("JWKSD_SERVER", &app.private)
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token);
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn doctor(app: &TestApp) -> (bool, Vec<Value>) {
    let (ok, stdout, stderr) = cli(app, &["doctor", "--client", "test", "--json"]).await;
    let checks: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
    (ok, checks)
}

fn verdict<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

#[tokio::test]
async fn doctor_walks_the_whole_path_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _oauth, _) = with_real_server(dir.path(), "/.well-known/jwks.json", &[]).await;
    let (ok, checks) = doctor(&app).await;
    for name in [
        "jwks_fetch",
        "jwks_content_type",
        "jwks_cache_control",
        "jwks_kids",
        "algorithm",
        "discovery",
        "token_endpoint",
        "audience",
        "scopes",
        "clock",
        "token_request",
    ] {
        assert_eq!(
            verdict(&checks, name)["verdict"],
            "ok",
            "{name}: {checks:?}"
        );
    }
    assert_eq!(
        verdict(&checks, "jwks_https")["verdict"],
        "warn",
        "plain http on loopback is only a warning"
    );
    assert!(ok, "nothing blocks: exit code 0");

    // The person-readable form says the same.
    let (_, text, _) = cli(&app, &["doctor", "--client", "test"]).await;
    assert!(text.contains("[ ok ] token_request"), "{text}");

    // After two forced rotations the EHR has not seen the signing kid: doctor names it.
    assert_eq!(app.rotate("default", true).await.status(), 200);
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let (ok, checks) = doctor(&app).await;
    assert!(!ok);
    let token = verdict(&checks, "token_request");
    assert_eq!(token["verdict"], "fail");
    assert_eq!(token["classification"], "kid_not_yet_seen");
    app.stop().await;
}

#[tokio::test]
async fn doctor_names_each_failure_class_of_the_token_request() {
    let cases = [
        (
            Scripted::error(401, "invalid_client", "unknown client"),
            "unknown_client",
        ),
        (
            Scripted::error(429, "rate_limit_exceeded", "slow down").header("Retry-After", "60"),
            "rate_limited",
        ),
        (
            Scripted::error(500, "server_error", "oops").header("Retry-After", "60"),
            "server_error",
        ),
        (
            Scripted::error(400, "invalid_scope", "no such scope"),
            "invalid_scope",
        ),
        (
            Scripted::error(400, "invalid_client", "signature verification failed"),
            "key_not_registered",
        ),
    ];
    for (answer, class) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (app, fake, clock) = with_fake_server(dir.path(), "client-1").await;
        clock.advance(2 * 3600); // keys published long ago
        fake.always(answer);
        let (ok, checks) = doctor(&app).await;
        assert!(!ok, "{class}");
        assert_eq!(
            verdict(&checks, "token_request")["classification"],
            class,
            "{checks:?}"
        );
        app.stop().await;
        fake.stop().await;
    }
}

#[tokio::test]
async fn doctor_notices_a_clock_far_off() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    let an_hour_ahead = httpdate::fmt_http_date(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    fake.always(Scripted::ok("t").header("Date", an_hour_ahead));
    let (ok, checks) = doctor(&app).await;
    assert!(!ok);
    let clock = verdict(&checks, "clock");
    assert_eq!(clock["verdict"], "fail", "{clock}");
    assert!(clock["fix"].as_str().unwrap().contains("NTP"));
    assert_eq!(verdict(&checks, "token_request")["verdict"], "ok");
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn register_prints_and_writes_a_valid_kit_for_every_vendor() {
    use x509_cert::der::Decode;
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server_on(dir.path(), "client-1", RSA_KEYS).await;
    let served = app.jwks("default").await;
    let current = app.kid_in_state("default", "current").await.unwrap();
    let next = app.kid_in_state("default", "next").await.unwrap();
    for (vendor, note) in [
        ("eclinicalworks", "allow-list"),
        ("epic", "non-production"),
        ("oracle", "upload"),
        ("athena", "50 token requests"),
        ("generic", "private_key_jwt"),
    ] {
        let out = dir.path().join(format!("kit-{vendor}"));
        let (ok, text, stderr) = cli(
            &app,
            &[
                "register",
                "--client",
                "test",
                "--vendor",
                vendor,
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok, "{stderr}");
        assert!(
            text.contains(&format!(
                "JWKS URL:        {}/jwks/default.json",
                app.public
            )),
            "{text}"
        );
        assert!(
            text.contains("client_id:       client-1") && text.contains("algorithm:       RS384")
        );
        assert!(text.contains(note), "{vendor}: {text}");
        assert_eq!(
            std::fs::read_to_string(out.join("README.txt")).unwrap(),
            text
        );
        let kit: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("jwks.json")).unwrap()).unwrap();
        let kids: Vec<&str> = kit["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [current.as_str(), next.as_str()]);
        for key in kit["keys"].as_array().unwrap() {
            assert!(
                served["keys"].as_array().unwrap().contains(key),
                "the kit's JWK is the published one"
            );
            assert!(key.get("d").is_none());
            let pem =
                std::fs::read_to_string(out.join(format!("{}.pem", key["kid"].as_str().unwrap())))
                    .unwrap();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            let der =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
            let cert = x509_cert::Certificate::from_der(&der).expect("the PEM parses");
            let spk = cert
                .tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes();
            let rsa = pkcs1::RsaPublicKey::from_der(spk).unwrap();
            let n = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                key["n"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(
                rsa.modulus.as_bytes(),
                n.as_slice(),
                "the certificate's key is the JWK's key"
            );
        }
    }
    let (_, text, _) = cli(
        &app,
        &["register", "--client", "test", "--vendor", "eclinicalworks"],
    )
    .await;
    assert!(!text.contains("WARNING"), "RS384 suits eClinicalWorks");
    app.stop().await;
    fake.stop().await;
}

/// A tiny stand-in for the host in front of jwksd: HTTPS with a certificate no root
/// vouches for (what an incomplete chain looks like to a client), or a plain redirect.
const FRONT_END: &str = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if sys.argv[1] == "redirect":
            self.send_response(301)
            self.send_header("Location", "https://example.org/jwks.json")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"keys": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
if sys.argv[1] == "tls":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The python3 front end (killed when dropped) and the port it bound.
struct FrontEnd {
    _process: KillOnDrop,
    port: u16,
}

impl FrontEnd {
    fn start(args: &[&str]) -> FrontEnd {
        use std::io::BufRead;
        let mut child = KillOnDrop(
            std::process::Command::new("python3")
                .arg("-c")
                .arg(FRONT_END)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3 is installed (scripts/test installs it)"),
        );
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("front end did not start: {line:?}"));
        FrontEnd {
            _process: child,
            port,
        }
    }
}

#[tokio::test]
async fn doctor_fails_a_jwks_url_with_an_untrusted_certificate_chain_or_a_redirect() {
    use jwksd::keys::{cert, Algorithm, KeyMaterial, RsaBits};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyMaterial::generate(Algorithm::Es256, RsaBits::B2048).unwrap();
    let der = cert::self_signed(&key, "CN=127.0.0.1", time::OffsetDateTime::now_utc()).unwrap();
    let pkcs8 = key.to_pkcs8().unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pkcs8[..]);
    let key_pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        b64.as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::fs::write(dir.path().join("cert.pem"), cert::to_pem(&der)).unwrap();
    std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
    let tls = FrontEnd::start(&[
        "tls",
        dir.path().join("cert.pem").to_str().unwrap(),
        dir.path().join("key.pem").to_str().unwrap(),
    ]);
    let redirect = FrontEnd::start(&["redirect"]);

    let fake = FakeTokenServer::start().await;
    fake.always(Scripted::ok("t"));
    for (public_url, needle) in [
        (
            format!("https://127.0.0.1:{}", tls.port),
            "certificate chain",
        ),
        (format!("http://127.0.0.1:{}", redirect.port), "redirect"),
    ] {
        let app_dir = tempfile::tempdir().unwrap();
        let config = token_config(
            &fake.token_endpoint(),
            &fake.fhir_base_url(),
            "client-1",
            &public_url,
        );
        let app = spawn_app_on(
            app_dir.path(),
            &config,
            loopback_listener(),
            &TestClock::default(),
        )
        .await;
        let (ok, checks) = doctor(&app).await;
        assert!(!ok, "{public_url}");
        let fetch = verdict(&checks, "jwks_fetch");
        assert_eq!(fetch["verdict"], "fail", "{fetch}");
        let text = format!("{} {}", fetch["detail"], fetch["fix"]);
        assert!(text.contains(needle), "{public_url}: {text}");
        app.stop().await;
    }
    fake.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_endpoint_it_is_found_by_smart_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let public = loopback_listener();
    let oauth = OAuthServer::start(&format!("{}/.well-known/jwks.json", url_of(&public)), &[]);
    let config = token_config(
        &oauth.token_endpoint,
        &oauth.fhir_base_url,
        "jwksd-test-client",
        &url_of(&public),
    )
    .replace(
        &format!("token_endpoint = \"{}\"\n", oauth.token_endpoint),
        "",
    );
    assert!(!config.contains("token_endpoint"));
    let app = spawn_app_on(dir.path(), &config, public, &TestClock::default()).await;
    let (token, _) = token_ok(&app, json!({"client_id": "test"})).await;
    assert!(token["access_token"].is_string());
    // Assertions for the client default to the discovered token endpoint as audience.
    let assertion: Value = app
        .http
        .post(format!("{}/v1/assertions", app.private))
        .bearer_auth(CALLER)
        .json(&json!({"client_id": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = assertion["client_assertion"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], oauth.token_endpoint.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_failed_upstream_answer_instead_of_repeating_it() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    fake.always(Scripted::error(
        401,
        "invalid_client",
        "client authentication failed",
    ));
    let app = std::sync::Arc::new(app);
    let mut calls = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        calls.push(tokio::spawn(async move {
            get_token(&app, json!({"client_id": "test"}))
                .await
                .status()
                .as_u16()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 502);
    }
    let upstream = fake.received().len();
    assert!(
        upstream <= 3,
        "50 concurrent callers caused {upstream} upstream requests"
    );
    // Errors are not cached: a later call asks again.
    assert_eq!(
        get_token(&app, json!({"client_id": "test"})).await.status(),
        502
    );
    assert_eq!(fake.received().len(), upstream + 1);
}

#[tokio::test]
async fn a_caller_may_narrow_the_clients_scopes_but_not_widen_them() {
    let dir = tempfile::tempdir().unwrap();
    let (app, fake, _) = with_fake_server(dir.path(), "client-1").await;
    fake.always(Scripted::ok("t"));
    let problem = assert_problem(
        get_token(
            &app,
            json!({"client_id": "test", "scope": "system/Patient.read system/Everything.write"}),
        )
        .await,
        403,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("system/Everything.write"),
        "{problem}"
    );
    assert!(fake.received().is_empty(), "nothing was sent upstream");
    let (token, _) = token_ok(
        &app,
        json!({"client_id": "test", "scope": "system/Patient.read"}),
    )
    .await;
    assert_eq!(token["access_token"], "t");
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn a_revocation_drops_tokens_obtained_with_the_revoked_key() {
    let dir = tempfile::tempdir().unwrap();
    let (app, oauth, _) = with_real_server(dir.path(), "/.well-known/jwks.json", &[]).await;
    let (first, _) = token_ok(&app, json!({"client_id": "test"})).await;
    let current = app.kid_in_state("default", "current").await.unwrap();
    assert_eq!(app.revoke(&current).await.status(), 200);
    let (second, cache) = token_ok(&app, json!({"client_id": "test"})).await;
    assert_eq!(
        cache, "miss",
        "a token obtained with a revoked key is never served"
    );
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(oauth.token_requests().await, 2);
    app.stop().await;
}

#[tokio::test]
async fn scope_is_the_default_request_and_allowed_scopes_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeTokenServer::start().await;
    fake.always(Scripted::ok("t"));
    let public = loopback_listener();
    let config = token_config_on(
        EC_KEYS,
        &fake.token_endpoint(),
        &fake.fhir_base_url(),
        "client-1",
        &url_of(&public),
    )
    .replace(
        "scope = \"system/Patient.read system/Observation.read\"",
        "scope = \"system/Patient.read\"\n\
         allowed_scopes = [\"system/Patient.read\", \"system/Observation.read\"]",
    );
    let app = spawn_app_on(dir.path(), &config, public, &TestClock::default()).await;
    // No scope asked for: the default, `scope`, is sent.
    token_ok(&app, json!({"client_id": "test"})).await;
    // A scope beyond `scope` but within `allowed_scopes` is allowed.
    token_ok(
        &app,
        json!({"client_id": "test", "scope": "system/Observation.read"}),
    )
    .await;
    let sent: Vec<String> = fake
        .received()
        .iter()
        .map(|form| form.get("scope").cloned().unwrap_or_default())
        .collect();
    assert_eq!(sent, ["system/Patient.read", "system/Observation.read"]);
    // Beyond `allowed_scopes`: refused before anything is sent.
    let problem = assert_problem(
        get_token(
            &app,
            json!({"client_id": "test", "scope": "system/Patient.read system/Everything.write"}),
        )
        .await,
        403,
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("system/Everything.write") && detail.contains("allowed_scopes"),
        "{problem}"
    );
    assert_eq!(fake.received().len(), 2, "nothing more was sent upstream");
    // The admin API shows both: what is asked for by default and what a caller may ask for.
    let clients: Value = app
        .admin(reqwest::Method::GET, "/admin/v1/clients")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client = &clients["clients"][0];
    assert_eq!(client["scope"], "system/Patient.read", "{clients}");
    assert_eq!(
        client["allowed_scopes"],
        json!(["system/Patient.read", "system/Observation.read"]),
        "{clients}"
    );
    app.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_a_504_that_says_it_was_not_reached() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port.
    let public = loopback_listener();
    let config = token_config_on(
        EC_KEYS,
        "http://127.0.0.1:9/token",
        "http://127.0.0.1:9/fhir",
        "client-1",
        &url_of(&public),
    );
    let app = spawn_app_on(dir.path(), &config, public, &TestClock::default()).await;
    let problem = assert_problem(get_token(&app, json!({"client_id": "test"})).await, 504).await;
    assert_eq!(problem["classification"], "unreachable", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the token request failed: the token endpoint could not be reached"),
        "not 'refused': it never answered: {detail}"
    );
    app.stop().await;
}
