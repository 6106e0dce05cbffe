//! `POST /v1/assertions` and the audit trail behind it.

use std::collections::HashSet;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

pub const BILLING_TOKEN: &str = "billing-sync-token-0123456789abcdefghijklmnop";
pub const EXPORT_TOKEN: &str = "bulk-export-token-0123456789abcdefghijklmnopq";
pub const ECW_TOKEN_URL: &str = "https://oauthserver.eclinicalworks.com/oauth/oauth2/token";
pub const EPIC_TOKEN_URL: &str = "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token";

pub fn sha256_hex(text: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, text.as_bytes()).as_ref())
}

/// Two key sets (`default` ES256, `epic` ES384), two clients, two callers; `extra` is
/// appended. EC keys: most tests here are not about RSA, and RSA keys take long to make.
pub fn signing_config(extra: &str) -> String {
    signing_config_on("alg = \"ES256\"", extra)
}

/// As [`signing_config`], with the `default` key set on the default algorithm, RS384.
pub fn rsa_signing_config(extra: &str) -> String {
    signing_config_on("", extra)
}

fn signing_config_on(default_alg: &str, extra: &str) -> String {
    format!(
        r#"
[keysets.default]
{default_alg}
[keysets.epic]
alg = "ES384"

[clients.ecw]
client_id = "ecw-client-id"
keyset = "default"
token_endpoint = "{ECW_TOKEN_URL}"

[clients.epic]
client_id = "epic-client-id"
keyset = "epic"
token_endpoint = "{EPIC_TOKEN_URL}"
audiences = ["{EPIC_TOKEN_URL}", "https://alt.example.org/token"]
assertion_lifetime = "2m"

[callers.billing]
token_sha256 = "{}"
clients = ["ecw"]

[callers.export]
token_sha256 = "{}"
clients = ["ecw", "epic"]
{extra}
"#,
        sha256_hex(BILLING_TOKEN),
        sha256_hex(EXPORT_TOKEN)
    )
}

pub async fn request_assertion(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/assertions", app.private))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn audit(app: &TestApp, query: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/admin/v1/audit{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn issued_count(app: &TestApp) -> usize {
    audit(app, "?limit=1000").await["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"] == "assertion.issued")
        .count()
}

/// Verifies `jwt` with the jsonwebtoken crate against the JWKS jwksd serves for `keyset`.
pub async fn verify_independently(
    app: &TestApp,
    keyset: &str,
    jwt: &str,
    audience: &str,
    client_id: &str,
) -> Value {
    let jwks: JwkSet = app
        .get_public(&format!("/jwks/{keyset}.json"))
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let kid = header.kid.clone().expect("the header names its kid");
    let jwk = jwks.find(&kid).expect("the kid is published");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud", "jti"]);
    validation.leeway = 0;
    let data =
        jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("the assertion verifies against the published JWKS");
    data.claims
}

fn segment(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn an_assertion_verifies_against_the_served_jwks_and_carries_exactly_the_smart_claims() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &rsa_signing_config("")).await;
    let before = jwksd::unix_now();
    let response =
        request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw-client-id"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: jwksd::api::AssertionResponse = response.json().await.unwrap();
    let jwt = body.client_assertion.as_str();
    assert_eq!(
        body.client_assertion_type,
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(body.alg, "RS384");
    assert_eq!(
        body.kid,
        app.kid_in_state("default", "current").await.unwrap()
    );

    let claims = verify_independently(&app, "default", jwt, ECW_TOKEN_URL, "ecw-client-id").await;
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["aud", "exp", "iat", "iss", "jti", "sub"],
        "no nbf, nothing else"
    );
    assert_eq!(claims["sub"], "ecw-client-id");
    assert_eq!(claims["jti"], body.jti.as_str());
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(claims["jti"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    let after = jwksd::unix_now();
    assert!(iat < before, "iat is a little in the past");
    assert!(iat >= before - 10);
    assert!(
        (before + 240..=after + 240).contains(&exp),
        "the default lifetime is 4 minutes"
    );
    let header = segment(jwt, 0);
    assert_eq!(
        header,
        json!({"alg": "RS384", "kid": body.kid, "typ": "JWT"}),
        "no jku"
    );
    let expires_at = time::OffsetDateTime::parse(
        body.expires_at.as_deref().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires_at.unix_timestamp(), exp);
    app.stop().await;
}

#[tokio::test]
async fn an_es384_client_can_choose_one_of_its_audiences_and_a_shorter_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    // The signing moment lies between these two readings of the clock, however slow the
    // machine (a tolerance around "now, afterwards" fails on a loaded one).
    let before = jwksd::unix_now();
    let response = request_assertion(
        &app,
        EXPORT_TOKEN,
        json!({"client_id": "epic", "audience": "https://alt.example.org/token", "lifetime": 60}),
    )
    .await;
    let after = jwksd::unix_now();
    assert_eq!(response.status(), 200);
    let body: jwksd::api::AssertionResponse = response.json().await.unwrap();
    assert_eq!(body.alg, "ES384");
    let jwt = body.client_assertion.as_str();
    let claims = verify_independently(
        &app,
        "epic",
        jwt,
        "https://alt.example.org/token",
        "epic-client-id",
    )
    .await;
    let exp = claims["exp"].as_i64().unwrap();
    assert!((before + 60..=after + 60).contains(&exp), "{exp}");
    let before = jwksd::unix_now();
    let default_lifetime =
        request_assertion(&app, EXPORT_TOKEN, json!({"client_id": "epic"})).await;
    let after = jwksd::unix_now();
    let claims = segment(
        default_lifetime.json::<Value>().await.unwrap()["client_assertion"]
            .as_str()
            .unwrap(),
        1,
    );
    assert_eq!(
        claims["aud"], EPIC_TOKEN_URL,
        "the first audience is the default"
    );
    let exp = claims["exp"].as_i64().unwrap();
    assert!((before + 120..=after + 120).contains(&exp), "{exp}");
    app.stop().await;
}

#[tokio::test]
async fn every_refused_request_gets_its_status_and_creates_no_assertion_or_record() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let records_before = audit(&app, "?limit=1000").await["records"]
        .as_array()
        .unwrap()
        .len();
    let url = format!("{}/v1/assertions", app.private);
    let ok_body = json!({"client_id": "ecw-client-id"});
    let post = || app.http.post(&url);
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("no token", post().json(&ok_body), 401),
        (
            "wrong token",
            post().bearer_auth("nope").json(&ok_body),
            401,
        ),
        (
            "admin token is not a caller token",
            post().bearer_auth(&app.admin_token).json(&ok_body),
            401,
        ),
        (
            "caller of another client",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "epic-client-id"})),
            403,
        ),
        (
            "audience not in the list",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "audience": "https://evil.example/token"})),
            403,
        ),
        (
            "unknown client",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "nobody"})),
            404,
        ),
        (
            "lifetime 0",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "lifetime": 0})),
            422,
        ),
        (
            "lifetime 5, under the 10 s minimum",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "lifetime": 5})),
            422,
        ),
        (
            "lifetime 301",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "lifetime": 301})),
            422,
        ),
        (
            "lifetime 10^12",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "lifetime": 1_000_000_000_000_i64})),
            422,
        ),
        (
            "lifetime negative",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "lifetime": -5})),
            422,
        ),
        (
            "lifetime a string",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "lifetime": "60"})),
            422,
        ),
        (
            "lifetime 10^30",
            post()
                .bearer_auth(BILLING_TOKEN)
                .header("content-type", "application/json")
                .body(r#"{"client_id":"ecw","lifetime":1000000000000000000000000000000}"#),
            422,
        ),
        (
            "extra claim",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "scope": "x", "iss": "someone"})),
            422,
        ),
        (
            "kid in body",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "kid": "x"})),
            422,
        ),
        (
            "alg in body",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw", "alg": "none"})),
            422,
        ),
        (
            "no client_id",
            post().bearer_auth(BILLING_TOKEN).json(&json!({})),
            422,
        ),
        (
            "not an object",
            post().bearer_auth(BILLING_TOKEN).json(&json!(["ecw"])),
            422,
        ),
        (
            "malformed JSON",
            post()
                .bearer_auth(BILLING_TOKEN)
                .header("content-type", "application/json")
                .body("{\"client_id\":"),
            400,
        ),
        (
            "deeply nested JSON",
            post()
                .bearer_auth(BILLING_TOKEN)
                .header("content-type", "application/json")
                .body(deep),
            413,
        ),
        (
            "invalid UTF-8",
            post()
                .bearer_auth(BILLING_TOKEN)
                .header("content-type", "application/json")
                .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
            400,
        ),
        (
            "not JSON",
            post()
                .bearer_auth(BILLING_TOKEN)
                .header("content-type", "text/plain")
                .body("client_id=ecw"),
            415,
        ),
        (
            "form encoded",
            post()
                .bearer_auth(BILLING_TOKEN)
                .form(&[("client_id", "ecw")]),
            415,
        ),
        (
            "1 MB body",
            post()
                .bearer_auth(BILLING_TOKEN)
                .header("content-type", "application/json")
                .body(vec![b' '; 1 << 20]),
            413,
        ),
        (
            "header injection in client_id",
            post()
                .bearer_auth(BILLING_TOKEN)
                .json(&json!({"client_id": "ecw\r\nX-Injected: 1"})),
            404,
        ),
    ];
    for (name, request, status) in cases {
        let response = request.send().await.unwrap();
        assert!(response.headers().get("x-injected").is_none());
        assert_eq!(response.status().as_u16(), status, "{name}");
        let problem = assert_problem(response, status).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            !detail.contains("sqlx") && !detail.contains("panicked"),
            "{name}: {detail}"
        );
    }
    let shallow_nesting = post()
        .bearer_auth(BILLING_TOKEN)
        .header("content-type", "application/json")
        .body("[".repeat(1000) + &"]".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_problem(shallow_nesting, 400).await;
    let records_after = audit(&app, "?limit=1000").await["records"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        records_before, records_after,
        "refused requests leave no record"
    );
    assert_eq!(
        request_assertion(&app, BILLING_TOKEN, ok_body)
            .await
            .status(),
        200,
        "still serving"
    );
    app.stop().await;
}

#[tokio::test]
async fn after_rotation_new_assertions_carry_the_new_kid_and_old_ones_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let old: jwksd::api::AssertionResponse =
        request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"}))
            .await
            .json()
            .await
            .unwrap();
    let next = app.kid_in_state("default", "next").await.unwrap();
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let new: jwksd::api::AssertionResponse =
        request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(new.kid, next);
    assert_ne!(new.kid, old.kid);
    for assertion in [&old, &new] {
        verify_independently(
            &app,
            "default",
            &assertion.client_assertion,
            ECW_TOKEN_URL,
            "ecw-client-id",
        )
        .await;
    }
    // Revoking the key that signed the old assertion makes it unverifiable at once.
    assert_eq!(app.revoke(&old.kid).await.status(), 200);
    let jwks: JwkSet = app
        .get_public("/jwks/default.json")
        .await
        .json()
        .await
        .unwrap();
    assert!(jwks.find(&old.kid).is_none());
    app.stop().await;
}

#[tokio::test]
async fn the_audit_trail_records_assertions_and_key_events_and_pages_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    let mut jtis = HashSet::new();
    for (token, client) in [
        (BILLING_TOKEN, "ecw"),
        (EXPORT_TOKEN, "epic"),
        (EXPORT_TOKEN, "ecw"),
    ] {
        let body: jwksd::api::AssertionResponse =
            request_assertion(&app, token, json!({"client_id": client}))
                .await
                .json()
                .await
                .unwrap();
        jtis.insert(body.jti);
    }
    assert_eq!(app.rotate("default", true).await.status(), 200);

    let all = audit(&app, "").await;
    let records = all["records"].as_array().unwrap();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|e| **e == "key.generated").count(),
        5,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "assertion.issued").count(),
        3
    );
    let promoted = records
        .iter()
        .find(|r| r["event"] == "key.promoted")
        .unwrap();
    assert_eq!(promoted["caller"], "admin");
    assert_eq!(promoted["detail"]["forced"], true);
    assert!(records.iter().any(|r| r["event"] == "key.retired"));
    let seqs: Vec<i64> = records.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let issued: HashSet<String> = records
        .iter()
        .filter(|r| r["event"] == "assertion.issued")
        .map(|r| r["jti"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(issued, jtis);
    let one = records
        .iter()
        .find(|r| r["event"] == "assertion.issued")
        .unwrap();
    for field in [
        "time",
        "caller",
        "client_id",
        "kid",
        "jti",
        "audience",
        "expires_at",
        "hash",
    ] {
        assert!(one[field].is_string(), "{field} in {one}");
    }

    let export = audit(&app, "?caller=export").await;
    assert_eq!(export["records"].as_array().unwrap().len(), 2);
    let epic = audit(&app, "?client=epic-client-id").await;
    assert_eq!(epic["records"].as_array().unwrap().len(), 1);
    let kid = one["kid"].as_str().unwrap();
    assert!(audit(&app, &format!("?kid={kid}")).await["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["kid"] == kid));
    assert_eq!(
        audit(&app, "?since=2999-01-01T00:00:00Z").await["records"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Paging: two at a time reaches every record exactly once.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = audit(&app, &format!("?limit=2{cursor}")).await;
        paged.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, seqs);
    for bad in [
        "?since=yesterday",
        "?cursor=-1",
        "?limit=0",
        "?limit=5000",
        "?colour=red",
    ] {
        let response = app
            .admin(Method::GET, &format!("/admin/v1/audit{bad}"))
            .send()
            .await
            .unwrap();
        assert_problem(response, 400).await;
    }
    app.stop().await;
}

fn run_audit_verify(data_dir: &std::path::Path, backend: Vec<(String, String)>) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["audit", "verify"])
        .env("JWKSD_SERVER__DATA_DIR", data_dir)
        .envs(backend)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn audit_verify_passes_on_a_real_trail_and_names_the_record_after_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    for _ in 0..4 {
        assert_eq!(
            request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"}))
                .await
                .status(),
            200
        );
    }
    let page: jwksd::api::AuditPage = app
        .admin(Method::GET, "/admin/v1/audit?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = page.records.last().unwrap().clone();
    app.stop().await;
    let data = dir.path().join("data");
    let (ok, text) = run_audit_verify(&data, crate::helpers::backend_env(dir.path()));
    assert!(ok, "{text}");
    assert!(text.contains("intact: 8 records"), "{text}");
    // The head it prints is the one a log shipper's copy is compared with.
    assert!(
        text.contains(&format!(
            "head: record {}, hash {}",
            newest.seq, newest.hash
        )),
        "{text}"
    );
    if crate::helpers::sqlite_only("tampers with copies of the SQLite file") {
        return;
    }

    let tamper = |name: &str, sql: &'static [&'static str]| {
        let copy = dir.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for file in ["jwksd.db", "jwksd.db-wal", "jwksd.db-shm", "master.key"] {
            if data.join(file).exists() {
                std::fs::copy(data.join(file), copy.join(file)).unwrap();
            }
        }
        let db = copy.join("jwksd.db");
        async move {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            for statement in sql {
                if let Err(e) = sqlx::query(statement).execute(&pool).await {
                    panic!("{statement}: {e}");
                }
            }
            pool.close().await;
            run_audit_verify(db.parent().unwrap(), Vec::new())
        }
    };
    let (ok, text) = tamper(
        "edited",
        &["UPDATE audit SET audience = 'https://evil.example' WHERE seq = 6"],
    )
    .await;
    assert!(
        !ok && text.contains("record 6") && text.contains("edited"),
        "{text}"
    );
    let (ok, text) = tamper("truncated", &["DELETE FROM audit WHERE seq >= 7"]).await;
    assert!(
        !ok && text.contains("newest records were deleted"),
        "{text}"
    );
    let (ok, text) = tamper("deleted", &["DELETE FROM audit WHERE seq = 6"]).await;
    assert!(
        !ok && text.contains("record 7") && text.contains("deleted"),
        "{text}"
    );
    let (ok, text) = tamper(
        "reordered",
        &[
            "UPDATE audit SET seq = 1000 WHERE seq = 5",
            "UPDATE audit SET seq = 5 WHERE seq = 6",
            "UPDATE audit SET seq = 6 WHERE seq = 1000",
        ],
    )
    .await;
    assert!(!ok && text.contains("record 5"), "{text}");
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = signing_config("").replace(
        "clients = [\"ecw\"]\n",
        "clients = [\"ecw\"]\nrate_limit_per_minute = 30\n",
    );
    let app = spawn_app_with(dir.path(), &config).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry_after), "{retry_after}");
            assert_problem(response, 429).await;
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "a burst of 3 (a tenth of 30/min)"
    );
    assert_eq!(
        request_assertion(&app, EXPORT_TOKEN, json!({"client_id": "ecw"}))
            .await
            .status(),
        200,
        "other callers unaffected"
    );
    assert_eq!(issued_count(&app).await, 4);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_what_happened_on_the_private_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    for _ in 0..3 {
        assert_eq!(
            request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"}))
                .await
                .status(),
            200
        );
    }
    let etag = app.get_public("/.well-known/jwks.json").await.headers()["etag"].clone();
    let not_modified = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.public))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let text = app
        .http
        .get(format!("{}/metrics", app.private))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "jwksd_assertions_issued_total 3",
        "jwksd_jwks_served_total 1",
        "jwksd_jwks_not_modified_total 1",
        "jwksd_keys{keyset=\"default\",state=\"current\"} 1",
        "jwksd_keys{keyset=\"epic\",state=\"next\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert_problem(app.get_public("/metrics").await, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn with_the_audit_trail_unavailable_no_assertion_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    assert_eq!(
        request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"}))
            .await
            .status(),
        200
    );
    // The store goes away under the running service (a failed disk, say).
    app.keyring.store().close().await.unwrap();
    let response = request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
    assert!(response.headers().contains_key("retry-after"));
    let problem = assert_problem(response, 503).await;
    assert!(problem.get("client_assertion").is_none());
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no assertion was issued"),
        "{problem}"
    );
    assert_problem(app.get_public("/readyz").await, 503).await;
    assert_eq!(
        app.get_public("/.well-known/jwks.json").await.status(),
        200,
        "the JWKS is still served from memory"
    );
    app.stop().await;
}

/// Runs `jwksd audit ARGS` against `app` through its admin API; returns (success, stdout,
/// stderr).
async fn run_audit_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .kill_on_drop(true)
        .arg("audit")
        .args(args)
        .args(["--server", &app.private])
        .env_clear()
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

#[tokio::test]
async fn audit_list_and_export_show_the_trail_of_a_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &signing_config("")).await;
    for _ in 0..3 {
        let response = request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let page: jwksd::api::AuditPage = app
        .admin(Method::GET, "/admin/v1/audit?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Export: every record, one JSON object per line, exactly as the admin API has them.
    let (ok, out, err) = run_audit_cli(&app, &["export"]).await;
    assert!(ok, "{err}");
    let exported: Vec<jwksd::api::AuditEntry> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    assert_eq!(exported, page.records);
    assert!(exported.iter().any(|r| r.event == "key.promoted"));

    // Filters and an age for --since.
    let (ok, out, err) = run_audit_cli(
        &app,
        &["export", "--since", "1h", "--event", "assertion.issued"],
    )
    .await;
    assert!(ok, "{err}");
    let issued: Vec<jwksd::api::AuditEntry> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(issued.len(), 3, "{out}");
    assert!(issued.iter().all(|r| r.event == "assertion.issued"));
    let (ok, out, _) = run_audit_cli(&app, &["export", "--since", "2999-01-01T00:00:00Z"]).await;
    assert!(ok);
    assert_eq!(out, "", "nothing is newer than the future");

    // List: a table of the last day, and a note when --limit cuts it short.
    let (ok, out, err) = run_audit_cli(&app, &["list"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("   SEQ TIME"), "{out}");
    assert_eq!(out.lines().count(), 1 + page.records.len(), "{out}");
    let kid = issued[0].kid.as_deref().unwrap();
    assert!(
        out.contains("assertion.issued") && out.contains(kid),
        "{out}"
    );
    assert!(
        err.contains(&format!("{} records from", page.records.len())),
        "{err}"
    );
    let (ok, out, err) = run_audit_cli(&app, &["list", "--limit", "2"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(err.contains("more follow"), "{err}");
    let (ok, out, _) = run_audit_cli(&app, &["list", "--limit", "2", "--json"]).await;
    assert!(ok);
    let listed: Vec<jwksd::api::AuditEntry> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed, page.records[..2]);

    // A --since that is neither a time nor an age is refused before anything is sent.
    let (ok, _, err) = run_audit_cli(&app, &["list", "--since", "yesterday"]).await;
    assert!(!ok);
    assert!(err.contains("neither an RFC 3339 time"), "{err}");
    app.stop().await;
}
