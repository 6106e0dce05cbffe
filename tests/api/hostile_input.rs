//! Bad input on both listeners: each gets a precise problem, the process stays up, and the
//! key set does not change.

use reqwest::Method;

use crate::helpers::{assert_problem, spawn_app_with, EC_DEFAULT};

#[tokio::test]
async fn odd_key_set_names_and_kids_in_urls_get_404_problems() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let long = "a".repeat(10_000);
    let paths = [
        "/jwks/..%2F..%2Fetc%2Fpasswd.json".to_owned(),
        "/jwks/../default.json".to_owned(),
        "/jwks/d%C3%A9fault.json".to_owned(),
        "/jwks/%E2%80%AEdefault.json".to_owned(),
        "/jwks/DEFAULT.json".to_owned(),
        "/jwks/default".to_owned(),
        "/jwks/default.json%00".to_owned(),
        format!("/jwks/{long}.json"),
        "/certs/..%2Fmaster.key".to_owned(),
        format!("/certs/{long}.pem"),
        "/certs/%F0%9F%94%91.pem".to_owned(),
        "/nothing/here".to_owned(),
    ];
    for path in &paths {
        let response = app.get_public(path).await;
        let status = response.status().as_u16();
        // `/jwks/../default.json` may be normalised by the client to `/default.json`.
        assert_problem(response, 404).await;
        assert_eq!(status, 404, "{path}");
    }
    let ok = app.get_public("/.well-known/jwks.json").await;
    assert_eq!(ok.status(), 200, "still serving after hostile paths");
    app.stop().await;
}

#[tokio::test]
async fn the_public_listener_exposes_no_admin_route_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let admin = app
        .http
        .get(format!("{}/admin/v1/keysets", app.public))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_problem(admin, 404).await;
    let post = app
        .http
        .post(format!("{}/.well-known/jwks.json", app.public))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(post, 405).await;
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_refuses_missing_and_wrong_tokens_with_a_bearer_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let before = app.jwks("default").await;
    let url = format!("{}/admin/v1/keysets/default/rotate?force=true", app.private);
    let attempts = [
        app.http.post(&url),
        app.http.post(&url).bearer_auth("wrong"),
        app.http
            .post(&url)
            .bearer_auth(format!("{}x", app.admin_token)),
        app.http
            .post(&url)
            .header("Authorization", format!("Basic {}", app.admin_token)),
        app.http.post(&url).header("Authorization", "Bearer"),
    ];
    for attempt in attempts {
        let response = attempt.send().await.unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"jwksd\""
        );
        assert_problem(response, 401).await;
    }
    assert_eq!(
        app.jwks("default").await,
        before,
        "no refused request changed the key set"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_admin_requests_get_precise_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let before = app.jwks("default").await;
    let rotate = "/admin/v1/keysets/default/rotate";

    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (app.admin(Method::POST, &format!("{rotate}?force=maybe")), 400),
        (app.admin(Method::POST, &format!("{rotate}?forse=true")), 400),
        (app.admin(Method::POST, rotate).header("content-type", "application/json").body("{\"force\": "), 400),
        (app.admin(Method::POST, rotate).header("content-type", "application/json").body("{\"force\": true, \"kid\": \"x\"}"), 422),
        (app.admin(Method::POST, rotate).header("content-type", "application/json").body("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["), 400),
        (app.admin(Method::POST, rotate).header("content-type", "application/json").body(vec![0xff, 0xfe, b'{']), 400),
        (app.admin(Method::POST, rotate).header("content-type", "text/plain").body("force"), 415),
        (app.admin(Method::POST, rotate).header("content-type", "application/json").body(vec![b' '; 1 << 20]), 413),
        (app.admin(Method::POST, "/admin/v1/keysets/..%2Fx/rotate?force=true"), 404),
        (app.admin(Method::POST, "/admin/v1/keysets/nope/rotate?force=true"), 404),
        (app.admin(Method::POST, &format!("/admin/v1/keys/{}/revoke", "k".repeat(10_000))), 404),
        (app.admin(Method::GET, "/admin/v1/keysets/default/keys/extra"), 404),
        (app.admin(Method::DELETE, "/admin/v1/keysets"), 405),
    ];
    for (index, (request, status)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        assert_eq!(got, status, "case {index}");
        assert_problem(response, status).await;
    }
    assert_eq!(
        app.jwks("default").await,
        before,
        "no refused request changed the key set"
    );
    app.stop().await;
}

/// Runs the real `jwksd` admin client against `app`; returns (success, stdout + stderr).
async fn run_cli(app: &crate::helpers::TestApp, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .kill_on_drop(true)
        .args(args)
        .args(["--server", &app.private])
        .env_clear()
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token)
        .output()
        .await
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

#[tokio::test]
async fn a_kid_that_is_a_path_cannot_steer_the_cli_to_another_admin_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let current = app.kid_in_state("default", "current").await;
    let hostile = [
        "x/../../keysets/default/rotate?force=true#",
        "..",
        ".",
        "x%2F..%2Frotate",
        "kid with spaces",
    ];
    for kid in hostile {
        let (ok, output) = run_cli(&app, &["keys", "revoke", kid]).await;
        assert!(!ok, "`keys revoke {kid:?}` must fail: {output}");
        assert!(
            output.contains("letters, digits"),
            "the refusal says what a kid looks like: {output}"
        );
    }
    let (ok, output) = run_cli(
        &app,
        &[
            "keys",
            "rotate",
            "--keyset",
            "../keysets/default",
            "--force",
        ],
    )
    .await;
    assert!(!ok && output.contains("letters, digits"), "{output}");

    assert_eq!(
        app.kid_in_state("default", "current").await,
        current,
        "no rotation happened"
    );
    let audit: serde_json::Value = app
        .admin(Method::GET, "/admin/v1/audit?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert!(
        !events.contains(&"key.promoted") && !events.contains(&"key.revoked"),
        "{events:?}"
    );
    // A well-formed kid still reaches the server (and is refused there as unknown).
    let (ok, output) = run_cli(&app, &["keys", "revoke", "no-such-kid_0123"]).await;
    assert!(!ok && output.contains("404"), "{output}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_names_a_member_twice_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let kid = app.kid_in_state("default", "next").await.unwrap();
    let response = app
        .admin(Method::POST, &format!("/admin/v1/keys/{kid}/revoke"))
        .header("content-type", "application/json")
        .body(r#"{"reason": "rotation drill", "reason": "compromised"}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 400).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("`reason` more than once"),
        "{problem}"
    );
    assert_eq!(
        app.kid_in_state("default", "next").await.as_deref(),
        Some(kid.as_str()),
        "nothing was revoked"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_bad_query_parameter_is_named_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    for (method, path, words) in [
        (
            Method::GET,
            "/admin/v1/audit?limit=-1",
            "`limit` must be a whole number",
        ),
        (
            Method::GET,
            "/admin/v1/audit?foo=bar",
            "`foo` is not a parameter of this request; it takes since, client",
        ),
        (
            Method::POST,
            "/admin/v1/keysets/default/rotate?force=maybe",
            "`force` must be true or false",
        ),
    ] {
        let response = app.admin(method, path).send().await.unwrap();
        let problem = assert_problem(response, 400).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{path}: {detail}");
        assert!(!detail.contains("deserialize"), "{path}: {detail}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_key_set_is_the_same_problem_on_every_admin_route_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    for name in [
        "nope",
        "no%20such%20set",
        "%E2%80%AEdefault",
        &"a".repeat(300),
    ] {
        for route in ["keys", "fetchers", "jwks"] {
            let path = format!("/admin/v1/keysets/{name}/{route}");
            let response = app.admin(Method::GET, &path).send().await.unwrap();
            let problem = assert_problem(response, 404).await;
            assert_eq!(
                problem["type"], "urn:jwksd:problem:unknown-keyset",
                "{path}: {problem}"
            );
        }
    }
    app.stop().await;
}
