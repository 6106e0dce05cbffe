//! A refused token request is diagnosed only as far as the evidence goes, against the real
//! node-oidc-provider producing each failure: an unknown client_id, an unregistered JWKS
//! URL, a cached JWKS older than the kid, a scope not granted. node-oidc-provider words the
//! first three alike ("client authentication failed"), as many EHRs do, so what tells them
//! apart is jwksd's own evidence: whether the kid came from a rotation, whether a token was
//! obtained before. Through `POST /v1/tokens` and through `jwksd doctor`.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, loopback_listener, spawn_app_on, url_of, TestApp, TestClock};
use crate::signing::sha256_hex;
use crate::upstream::{OAuthServer, RawAnswer, RawBody, RawServer};

const CALLER: &str = "diagnosis-caller-token-0123456789abcdefghijkl";
/// The client_id node-oidc-provider knows (tests/oauth-server/server.mjs).
const KNOWN_CLIENT: &str = "jwksd-test-client";
const SCOPE: &str = "system/Patient.read system/Observation.read";

/// jwksd with one client `test` (client_id `client_id`, asking for `scope`) and the real
/// authorization server, which fetches jwksd's JWKS at `jwks_path`.
async fn start(
    dir: &std::path::Path,
    jwks_path: &str,
    client_id: &str,
    scope: &str,
) -> (TestApp, OAuthServer, TestClock) {
    // The server must know jwksd's JWKS URL before jwksd starts: bind first.
    let public = loopback_listener();
    let oauth = OAuthServer::start(&format!("{}{jwks_path}", url_of(&public)), &[]);
    let config = format!(
        r#"
[server]
public_url = "{public_url}"
[keysets.default]
alg = "ES384"
[keysets.other]
alg = "ES384"
[clients.test]
client_id = "{client_id}"
token_endpoint = "{token_endpoint}"
fhir_base_url = "{fhir_base_url}"
scope = "{scope}"
[callers.svc]
token_sha256 = "{caller}"
clients = ["test"]
"#,
        public_url = url_of(&public),
        token_endpoint = oauth.token_endpoint,
        fhir_base_url = oauth.fhir_base_url,
        caller = sha256_hex(CALLER),
    );
    let clock = TestClock::default();
    let app = spawn_app_on(dir, &config, public, &clock).await;
    (app, oauth, clock)
}

async fn refused_token(app: &TestApp) -> Value {
    let response = app
        .http
        .post(format!("{}/v1/tokens", app.private))
        .bearer_auth(CALLER)
        .json(&json!({"client_id": "test"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 502).await
}

async fn token_obtained(app: &TestApp) {
    let response = app
        .http
        .post(format!("{}/v1/tokens", app.private))
        .bearer_auth(CALLER)
        .json(&json!({"client_id": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The `cause` of each of the problem's possible causes, in order.
fn causes(problem: &Value) -> Vec<String> {
    problem["diagnosis"]["possible_causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .map(|c| c["cause"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `jwksd ARGS` against `app`, off the test's runtime (which also drives the app).
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .kill_on_drop(true)
        .args(args)
        .env("JWKSD_SERVER", &app.private)
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The doctor's token_request check, from `--json`.
async fn doctor_token_check(app: &TestApp) -> Value {
    let (ok, stdout, stderr) = cli(app, &["doctor", "--client", "test", "--json"]).await;
    assert!(
        !ok,
        "a refused token request fails the doctor: {stdout}{stderr}"
    );
    let checks: Vec<Value> =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
    checks
        .into_iter()
        .find(|c| c["check"] == "token_request")
        .unwrap_or_else(|| panic!("no token_request check: {stdout}"))
}

/// The doctor's report for a person: no `null` or `-` placeholders, every cause named.
async fn doctor_text(app: &TestApp) -> String {
    let (_, stdout, _) = cli(app, &["doctor", "--client", "test"]).await;
    for placeholder in ["null", " - ", "error -", "no description"] {
        assert!(
            !stdout.contains(placeholder),
            "the report shows the placeholder {placeholder:?}:\n{stdout}"
        );
    }
    stdout
}

#[tokio::test]
async fn an_unknown_client_id_on_a_brand_new_key_set_is_never_a_stale_cache_or_a_known_client() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _oauth, clock) = start(dir.path(), "/.well-known/jwks.json", "nobody", SCOPE).await;
    for when in ["at once", "two hours later"] {
        let problem = refused_token(&app).await;
        assert_eq!(problem["error"], "invalid_client", "{when}: {problem}");
        assert_eq!(
            problem["classification"], "undetermined",
            "{when}: {problem}"
        );
        // An unknown client's keys are never looked up: the fetcher record shows no fetch.
        assert_eq!(
            problem["diagnosis"]["jwks_fetched"], "never",
            "{when}: {problem}"
        );
        assert_eq!(
            causes(&problem),
            ["unknown_client", "key_not_registered"],
            "{when}: the first-day causes, most likely first, and no cache: {problem}"
        );
        let first = &problem["diagnosis"]["possible_causes"][0];
        assert_eq!(
            first["explanation"],
            "unknown client_id or app not enabled for this practice"
        );
        assert!(first["check"].as_str().unwrap().contains("client_id"));
        assert_eq!(problem["diagnosis"]["kid_from_rotation"], false);
        assert_eq!(problem["diagnosis"]["earlier_tokens"], "none");
        clock.advance(2 * 3600);
    }

    // jwksd doctor says the same, and in words without placeholders.
    let check = doctor_token_check(&app).await;
    assert_eq!(check["classification"], "undetermined", "{check}");
    let text = doctor_text(&app).await;
    assert!(
        text.contains("unknown client_id or app not enabled for this practice")
            && text.contains("JWKS URL not registered or not allow-listed"),
        "{text}"
    );
    assert!(!text.contains("kid_not_yet_seen"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn an_unregistered_jwks_url_is_listed_with_the_unknown_client_and_not_blamed_on_a_cache() {
    // The authorization server has another JWKS URL for the client: jwksd's keys are not in
    // it. On young first keys this is not a stale cache.
    let dir = tempfile::tempdir().unwrap();
    let (app, _oauth, _) = start(dir.path(), "/jwks/other.json", KNOWN_CLIENT, SCOPE).await;
    let problem = refused_token(&app).await;
    assert_eq!(problem["classification"], "undetermined", "{problem}");
    assert_eq!(
        causes(&problem),
        ["unknown_client", "key_not_registered"],
        "{problem}"
    );
    let check = doctor_token_check(&app).await;
    assert_eq!(check["classification"], "undetermined", "{check}");
    app.stop().await;
}

#[tokio::test]
async fn a_kid_the_servers_cached_jwks_lacks_is_named_once_a_token_was_obtained_before() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _oauth, _) = start(dir.path(), "/.well-known/jwks.json", KNOWN_CLIENT, SCOPE).await;
    // The server fetches the JWKS (and caches it for max-age) on the first token request.
    token_obtained(&app).await;
    // The first forced rotation promotes the next key, which that copy holds; the second
    // promotes a key made after the fetch.
    assert_eq!(app.rotate("default", true).await.status(), 200);
    token_obtained(&app).await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let problem = refused_token(&app).await;
    assert_eq!(problem["classification"], "kid_not_yet_seen", "{problem}");
    assert_eq!(problem["diagnosis"]["kid_from_rotation"], true);
    assert_eq!(problem["diagnosis"]["earlier_tokens"], "with_another_key");
    assert!(causes(&problem).is_empty(), "{problem}");
    let check = doctor_token_check(&app).await;
    assert_eq!(check["classification"], "kid_not_yet_seen", "{check}");
    app.stop().await;
}

#[tokio::test]
async fn a_scope_the_server_does_not_grant_is_invalid_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _oauth, _) = start(
        dir.path(),
        "/.well-known/jwks.json",
        KNOWN_CLIENT,
        "system/Patient.read system/Secret.read",
    )
    .await;
    let problem = refused_token(&app).await;
    assert_eq!(problem["classification"], "invalid_scope", "{problem}");
    assert_eq!(problem["error"], "invalid_scope");
    let check = doctor_token_check(&app).await;
    assert_eq!(check["classification"], "invalid_scope", "{check}");
    doctor_text(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_jwks_fetch_after_the_kid_counts_however_long_the_token_endpoint_takes_to_answer() {
    // CI once read a fetch made after the kid as "before the kid": the kid's publication
    // time was worked out again from its age after the answer came, on a clock that had
    // moved on meanwhile. Here the token service's clock moves ten minutes while the token
    // endpoint answers a generic refusal.
    let clock = TestClock::default();
    let during_the_answer = clock.clone();
    let endpoint = RawServer::start(move |_| {
        during_the_answer.advance(600);
        let body =
            json!({"error": "invalid_client", "error_description": "client authentication failed"});
        RawAnswer::json(401, RawBody::Fixed(body.to_string().into_bytes()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let public = loopback_listener();
    let config = format!(
        r#"
[server]
public_url = "{public_url}"
[keysets.default]
alg = "ES256"
[clients.test]
client_id = "somebody"
token_endpoint = "{endpoint}/token"
[callers.svc]
token_sha256 = "{caller}"
clients = ["test"]
"#,
        public_url = url_of(&public),
        endpoint = endpoint.base,
        caller = sha256_hex(CALLER),
    );
    let app = spawn_app_on(dir.path(), &config, public, &clock).await;
    // Somebody (the EHR, for all jwksd knows) fetches the JWKS after its first kid.
    let jwks = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.public))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    let problem = refused_token(&app).await;
    assert_eq!(
        problem["diagnosis"]["jwks_fetched"],
        Value::Null,
        "a fetch since the kid cannot say whether the EHR fetched: {problem}"
    );
    assert_eq!(problem["classification"], "undetermined", "{problem}");
    assert_eq!(
        causes(&problem),
        ["unknown_client", "key_not_registered"],
        "{problem}"
    );
    app.stop().await;
}
