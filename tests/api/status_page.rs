//! The status page (`GET /` on the private listener): its login, session and CSRF rules
//! over plain HTTP (reqwest, no browser), and the whole page in a real headless browser
//! (Debian's chromium driven by Playwright, tests/browser/status-page.mjs), checked
//! against the admin API.

use std::path::Path;

use reqwest::header;
use serde_json::Value;

use crate::helpers::{
    assert_problem, postgres_only, spawn_app_with, spawn_replica, KillOnDrop, TestApp,
};

const CALLER_TOKEN: &str = "status-page-test-caller-token-0123456789";
const COOKIE: &str = "__Host-jwksd_session";

/// Two key sets and a caller that can sign for a client of the first.
fn config() -> String {
    let hash = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        CALLER_TOKEN.as_bytes(),
    ));
    format!(
        r#"
[keysets.default]
alg = "ES256"
[keysets.epic-prod]
alg = "ES384"

[clients.ecw]
client_id = "ecw-client-id"
keyset = "default"
token_endpoint = "http://127.0.0.1:9/token"

[callers.billing]
token_sha256 = "{hash}"
clients = ["ecw"]
"#
    )
}

/// A client that keeps no cookies and follows no redirects: each test carries the session
/// cookie itself, so what the server set is exactly what is sent.
fn client() -> reqwest::Client {
    crate::helpers::http_client()
}

async fn login(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/status/login", app.private))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

/// The `name=value` of the session cookie a login set.
pub async fn session_cookie(app: &TestApp) -> String {
    let response = login(app, &app.admin_token).await;
    assert_eq!(response.status(), 303);
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

pub async fn get_page(app: &TestApp, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("{}{path}", app.private));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// The CSRF token in a page's hidden field.
fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}{path}", app.private))
        .header(header::COOKIE, cookie)
        .form(fields);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.send().await.unwrap()
}

fn assert_secure_headers(response: &reqwest::Response) {
    let h = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let csp = h("content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "no script source at all: {csp}"
    );
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("cache-control"), "no-store");
    assert!(h("content-type").starts_with("text/html"));
}

#[tokio::test]
async fn the_admin_token_signs_in_with_a_strict_session_cookie_and_a_wrong_one_shows_the_form_again(
) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &config()).await;

    let form = get_page(&app, "/", None).await;
    assert_eq!(form.status(), 200);
    assert_secure_headers(&form);
    let html = form.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("<label for=\"token\">Admin token</label>"));
    assert!(
        !html.contains("data-kid"),
        "nothing of the keys before login"
    );

    let wrong = login(&app, "wrong-token-wrong-token-wrong-token").await;
    assert_eq!(wrong.status(), 401);
    assert_secure_headers(&wrong);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());
    let html = wrong.text().await.unwrap();
    assert!(html.contains("id=\"login-error\""), "{html}");
    assert!(html.contains("name=\"token\""), "the form again");

    let right = login(&app, &app.admin_token).await;
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()[header::LOCATION], "/");
    let set = right.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set.starts_with(&format!("{COOKIE}=v1.")), "{set}");
    for attribute in [
        "; Secure",
        "; HttpOnly",
        "; SameSite=Strict",
        "; Path=/",
        "; Max-Age=28800",
    ] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        !set.contains(&app.admin_token),
        "the cookie holds no secret of the server"
    );
    let cookie = set.split(';').next().unwrap();

    let page = get_page(&app, "/", Some(cookie)).await;
    assert_eq!(page.status(), 200);
    assert_secure_headers(&page);
    let html = page.text().await.unwrap();
    for keyset in ["default", "epic-prod"] {
        assert!(html.contains(&format!("/jwks/{keyset}.json")), "{keyset}");
        for key in app.keys(keyset).await {
            let (kid, state) = (key["kid"].as_str().unwrap(), key["state"].as_str().unwrap());
            assert!(
                html.contains(&format!("data-kid=\"{kid}\" data-state=\"{state}\"")),
                "{kid} {state}"
            );
        }
    }
    assert!(!html.contains("<script"), "no script");
    assert!(!html.contains(" style="), "no inline style");

    // The cookie is the page's, never a credential of the admin API.
    let api = client()
        .get(format!("{}/admin/v1/keysets", app.private))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_problem(api, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_or_from_another_origin_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &config()).await;
    let cookie = session_cookie(&app).await;
    let html = get_page(&app, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_in(&html);
    let current = app.kid_in_state("default", "current").await;
    let path = "/status/keysets/default/rotate";
    let own = app.private.clone();

    for (what, origin, fields) in [
        ("no token", Some(own.as_str()), vec![("force", "true")]),
        (
            "a wrong token",
            Some(own.as_str()),
            vec![("force", "true"), ("csrf", "x")],
        ),
        (
            "another origin",
            Some("http://127.0.0.1:1"),
            vec![("force", "true"), ("csrf", csrf.as_str())],
        ),
        (
            "another site",
            Some("https://evil.example"),
            vec![("force", "true"), ("csrf", csrf.as_str())],
        ),
    ] {
        let response = post_form(&app, path, &cookie, origin, &fields).await;
        assert_eq!(response.status(), 403, "{what}");
        assert_secure_headers(&response);
        let body = response.text().await.unwrap();
        assert!(body.contains("Form Not Accepted"), "{what}: {body}");
        assert_eq!(
            app.kid_in_state("default", "current").await,
            current,
            "{what}"
        );
    }
    // A session's token is not another session's.
    let other = session_cookie(&app).await;
    let response = post_form(
        &app,
        path,
        &other,
        None,
        &[("force", "true"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(response.status(), 403);
    // No session at all: the login form, 401.
    let response = post_form(
        &app,
        path,
        "a=b",
        None,
        &[("force", "true"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(response.status(), 401);
    assert_eq!(app.kid_in_state("default", "current").await, current);

    // With its token, from its own origin: rotated (forced: the next key is new), and the
    // audit trail names the admin.
    let next = app.kid_in_state("default", "next").await;
    let response = post_form(
        &app,
        path,
        &cookie,
        Some(&own),
        &[("force", "true"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("Rotated default"), "{body}");
    assert_eq!(app.kid_in_state("default", "current").await, next);
    let audit: Value = app
        .admin(
            reqwest::Method::GET,
            "/admin/v1/audit?event=key.promoted&limit=1000",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let promoted = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kid"] == next.clone().unwrap().as_str())
        .expect("a promotion record");
    assert_eq!(promoted["caller"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn an_unforced_confirmation_never_forces_and_revoke_states_what_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &config()).await;
    let cookie = session_cookie(&app).await;
    let confirm = get_page(&app, "/status/keysets/default/rotate", Some(&cookie)).await;
    assert_eq!(confirm.status(), 200);
    assert_secure_headers(&confirm);
    let html = confirm.text().await.unwrap();
    assert!(html.contains("Forced: the next key"), "{html}");
    assert!(html.contains("less than prepublish (1 h 15 min)"), "{html}");
    let csrf = csrf_in(&html);
    let current = app.kid_in_state("default", "current").await;
    // The form as if it had said "not forced": the keyring refuses, 409, nothing changes.
    let response = post_form(
        &app,
        "/status/keysets/default/rotate",
        &cookie,
        None,
        &[("force", "false"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(response.status(), 409);
    assert!(response.headers().get(header::RETRY_AFTER).is_some());
    assert_eq!(app.kid_in_state("default", "current").await, current);

    let kid = app.kid_in_state("epic-prod", "next").await.unwrap();
    let confirm = get_page(&app, &format!("/status/keys/{kid}/revoke"), Some(&cookie)).await;
    let html = confirm.text().await.unwrap();
    assert!(html.contains("stop verifying at once"), "{html}");
    let response = post_form(
        &app,
        &format!("/status/keys/{kid}/revoke"),
        &cookie,
        None,
        &[("csrf", &csrf), ("reason", "status page test")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let states: Vec<(String, String)> = app
        .keys("epic-prod")
        .await
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().into(),
                k["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        states.contains(&(kid.clone(), "revoked".into())),
        "{states:?}"
    );
    assert!(!app.kids("epic-prod").await.contains(&kid));
    // The audit trail says the revocation came from the status page, not the admin API.
    let audit: jwksd::api::AuditPage = app
        .admin(reqwest::Method::GET, "/admin/v1/audit?event=key.revoked")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = audit.records.last().expect("a key.revoked record");
    assert_eq!(record.caller.as_deref(), Some("admin"));
    let detail = record.detail.clone().unwrap();
    assert_eq!(detail["via"], "status_page", "{detail}");
    assert_eq!(detail["reason"], "status page test", "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn a_session_ends_at_logout_and_an_edited_cookie_is_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &config()).await;
    let cookie = session_cookie(&app).await;
    // The expiry pushed a day later, the tag kept.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut parts: Vec<String> = value.split('.').map(str::to_owned).collect();
    parts[1] = (parts[1].parse::<i64>().unwrap() + 86_400).to_string();
    let edited = format!("{name}={}", parts.join("."));
    let html = get_page(&app, "/", Some(&edited))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"token\""), "the login form");

    let html = get_page(&app, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_in(&html);
    let response = post_form(&app, "/status/logout", &cookie, None, &[("csrf", &csrf)]).await;
    assert_eq!(response.status(), 303);
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The same cookie, sent again (as a copy would be): no session on this replica.
    let html = get_page(&app, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"token\""), "logged out");
    app.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &config()).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = login(&app, "wrong-token-wrong-token-wrong-token").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().get(header::RETRY_AFTER).is_some());
            assert!(response.headers().get(header::SET_COOKIE).is_none());
        }
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    // Even the right token waits its turn.
    assert_eq!(login(&app, &app.admin_token).await.status(), 429);
    app.stop().await;
}

#[tokio::test]
async fn refused_requests_are_listed_with_route_problem_and_caller_never_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &config()).await;
    let leaked = "Bearer this-is-a-token-that-must-never-be-shown";
    let refused = client()
        .post(format!("{}/v1/assertions", app.private))
        .header(header::AUTHORIZATION, leaked)
        .json(&serde_json::json!({ "client_id": "ecw" }))
        .send()
        .await
        .unwrap();
    assert_problem(refused, 401).await;
    // A known caller refused for a client it may not use.
    let forbidden = client()
        .post(format!("{}/v1/assertions", app.private))
        .bearer_auth(CALLER_TOKEN)
        .json(&serde_json::json!({ "client_id": "nobody" }))
        .send()
        .await
        .unwrap();
    assert_problem(forbidden, 404).await;
    // An assertion, for the chart.
    let issued = client()
        .post(format!("{}/v1/assertions", app.private))
        .bearer_auth(CALLER_TOKEN)
        .json(&serde_json::json!({ "client_id": "ecw" }))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 200);

    let cookie = session_cookie(&app).await;
    let html = get_page(&app, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<code>POST /v1/assertions</code></td><td>401</td><td>unauthorized</td><td>unknown</td>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<code>POST /v1/assertions</code></td><td>404</td><td>not-found</td><td>billing</td>"
        ),
        "{html}"
    );
    assert!(!html.contains("this-is-a-token"), "no token on the page");
    assert!(!html.contains(CALLER_TOKEN));
    assert!(
        html.contains("1 assertions for callers, 0 for token requests"),
        "{html}"
    );
    app.stop().await;
}

/// With several jwksd on one database, a session made by one is valid on the other (both
/// derive the session key from the one master key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_by_one_replica_is_valid_on_another() {
    if postgres_only("replicas share a database") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_app_with(&dir.path().join("a"), &config()).await;
    // Replicas behind one load balancer share the admin token (sessions are bound to it).
    std::fs::create_dir_all(dir.path().join("b/data")).unwrap();
    std::fs::copy(
        dir.path().join("a/data/admin.token"),
        dir.path().join("b/data/admin.token"),
    )
    .unwrap();
    let second = spawn_replica(&dir.path().join("a"), &dir.path().join("b"), &config()).await;
    let cookie = session_cookie(&first).await;
    let html = get_page(&second, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Key status"), "{html}");
    second.stop().await;
    first.stop().await;
}

/// The browser test's report, as tests/browser/status-page.mjs prints it.
fn run_browser(app: &TestApp, screenshots: &Path) -> Value {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "the browser test is not installed: run `npm ci --prefix tests/browser` (scripts/test does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: apt-get install chromium (scripts/test does)"
    );
    let child = std::process::Command::new("node")
        .arg("status-page.mjs")
        .current_dir(&browser_dir)
        .env("JWKSD_URL", &app.private)
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token)
        .env("SCREENSHOT_DIR", screenshots)
        .env("ROTATE_KEYSET", "default")
        .env("CSRF_KEYSET", "epic-prod")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the browser test took more than 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the browser test failed: {stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no report ({e}): {stdout} {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_works_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}\n[server]\npublic_url = \"https://keys.example.org\"\n",
        config()
    );
    let app = spawn_app_with(dir.path(), &toml).await;
    // Some activity for the chart, and a refusal for the list.
    for _ in 0..3 {
        let issued = client()
            .post(format!("{}/v1/assertions", app.private))
            .bearer_auth(CALLER_TOKEN)
            .json(&serde_json::json!({ "client_id": "ecw" }))
            .send()
            .await
            .unwrap();
        assert_eq!(issued.status(), 200);
    }
    let _ = client()
        .get(format!("{}/admin/v1/keysets", app.private))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    let before: Vec<(String, Vec<(String, String)>)> = {
        let mut out = Vec::new();
        for keyset in ["default", "epic-prod"] {
            let keys = app
                .keys(keyset)
                .await
                .iter()
                .map(|k| {
                    (
                        k["kid"].as_str().unwrap().into(),
                        k["state"].as_str().unwrap().into(),
                    )
                })
                .collect();
            out.push((keyset.to_owned(), keys));
        }
        out
    };
    let default_next = app.kid_in_state("default", "next").await.unwrap();
    let epic_current = app.kid_in_state("epic-prod", "current").await;

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    let report = tokio::task::block_in_place(|| run_browser(&app, &screenshots));
    eprintln!("browser report: {report}");
    eprintln!("screenshots in {}", screenshots.display());

    assert_eq!(report["wrong_login_status"], 401, "{report}");
    assert!(
        report["wrong_login_error"]
            .as_str()
            .unwrap()
            .contains("not the admin token"),
        "{report}"
    );
    assert_eq!(report["cookie_after_wrong_login"], false);
    assert_eq!(report["cookie"]["httpOnly"], true);
    assert_eq!(report["cookie"]["secure"], true);
    assert_eq!(report["cookie"]["sameSite"], "Strict");
    assert_eq!(report["headers"]["frame"], "DENY");
    assert_eq!(report["headers"]["cache"], "no-store");

    // The timeline as the browser shows it is the admin API's, key set by key set.
    let timeline = report["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2);
    for ((keyset, keys), shown) in before.iter().zip(timeline) {
        assert_eq!(shown["keyset"], keyset.as_str());
        let shown_keys: Vec<(String, String)> = shown["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().into(),
                    k["state"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(&shown_keys, keys, "{keyset}");
        assert_eq!(
            shown["jwks_url"],
            format!("https://keys.example.org/jwks/{keyset}.json")
        );
        assert!(shown["next_rotation"].as_str().unwrap().contains("UTC"));
    }
    assert_eq!(timeline[0]["chart"], true, "default signed assertions");
    assert!(
        report["refusals_listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("/admin/v1/keysets")),
        "{report}"
    );

    // The rotation, confirmed, really happened.
    let consequence = report["rotate_consequence"].as_str().unwrap();
    assert!(
        consequence.contains("Forced") && consequence.contains(&default_next),
        "{consequence}"
    );
    assert_eq!(report["rotate_status"], 200);
    assert_eq!(report["rotate_promoted"], default_next.as_str());
    assert_eq!(
        app.kid_in_state("default", "current").await.as_deref(),
        Some(default_next.as_str())
    );

    // Every CSRF attempt refused; the target key set untouched.
    for attempt in ["without_token", "wrong_token", "other_origin"] {
        assert_eq!(
            report["csrf"][attempt]["status"], 403,
            "{attempt}: {report}"
        );
        assert_eq!(report["csrf"][attempt]["heading"], "Form Not Accepted");
    }
    assert_eq!(app.kid_in_state("epic-prod", "current").await, epic_current);

    assert_eq!(report["after_logout_form"], true);
    assert_eq!(report["cookie_after_logout"], false);
    assert_eq!(report["phone_overflow"], 0, "nothing wider than a phone");
    assert_eq!(
        report["csp_violations"],
        serde_json::json!([]),
        "the page needs nothing its policy forbids"
    );
    for (page, violations) in report["axe"].as_object().unwrap() {
        let serious: Vec<&Value> = violations
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(serious.is_empty(), "axe on {page}: {serious:?}");
    }
    for shot in [
        "status-desktop.png",
        "status-phone.png",
        "confirm-rotate.png",
    ] {
        assert!(screenshots.join(shot).exists(), "{shot}");
    }
    // `JWKSD_UPDATE_SCREENSHOT=1` refreshes the README's picture from this run.
    if std::env::var_os("JWKSD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(
            screenshots.join("status-desktop.png"),
            docs.join("status-page.png"),
        )
        .unwrap();
    }
    app.stop().await;
}
