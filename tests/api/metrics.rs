//! `GET /metrics`: every family the README lists, with its `# HELP` and `# TYPE`, values
//! that move with what happened (JWKS 200 and 304, signing, a refusal, a token request
//! against the real authorization server, a cached token), the whole exposition accepted
//! by Prometheus' own Python parser, and the example alert rules naming only metrics that
//! exist.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::{loopback_listener, spawn_app_on, url_of, TestApp, TestClock};
use crate::signing::sha256_hex;
use crate::upstream::OAuthServer;

const CALLER: &str = "metrics-caller-token-0123456789abcdefghijklmn";

/// Every family `/metrics` must show, with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("jwksd_jwks_served_total", "counter"),
    ("jwksd_jwks_not_modified_total", "counter"),
    ("jwksd_assertions_issued_total", "counter"),
    ("jwksd_tokens_from_cache_total", "counter"),
    ("jwksd_tokens_fetched_total", "counter"),
    ("jwksd_token_failures_total", "counter"),
    ("jwksd_upstream_token_requests_total", "counter"),
    ("jwksd_http_protocol_errors_total", "counter"),
    ("jwksd_keys", "gauge"),
    ("jwksd_jwks_requests_total", "counter"),
    ("jwksd_assertions_signed_total", "counter"),
    ("jwksd_requests_refused_total", "counter"),
    ("jwksd_token_requests_upstream_total", "counter"),
    ("jwksd_token_cache_hits_total", "counter"),
    ("jwksd_token_cache_misses_total", "counter"),
    ("jwksd_key_age_seconds", "gauge"),
    ("jwksd_current_key_signing_seconds", "gauge"),
    ("jwksd_next_key_published_seconds", "gauge"),
    ("jwksd_keyset_next_change_seconds", "gauge"),
    ("jwksd_keyset_rotation_period_seconds", "gauge"),
    ("jwksd_audit_write_duration_seconds", "histogram"),
    ("jwksd_store_errors_total", "counter"),
    // Its samples only for HTTPS listeners (tests/api/tls.rs); the family is always there.
    ("jwksd_tls_certificate_expiry_timestamp_seconds", "gauge"),
];

/// A scrape: the `# HELP` and `# TYPE` of each family, and every sample by its series
/// (`name{labels}` exactly as written).
struct Scrape {
    text: String,
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let (mut help, mut types, mut samples) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').unwrap();
                assert!(
                    help.insert(name.to_owned(), text.to_owned()).is_none(),
                    "{name} twice"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap();
                samples.insert(series.to_owned(), value.parse().unwrap());
            }
        }
        Scrape {
            text,
            help,
            types,
            samples,
        }
    }

    /// The value of one series; 0 when absent (a counter never bumped).
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn present(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{}", self.text))
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .http
        .get(format!("{}/metrics", app.private))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(response.text().await.unwrap())
}

/// Runs Prometheus' reference parser (`prometheus_client`, which scripts/test installs)
/// over `text` and returns the family names it read.
fn reference_parse(text: &str) -> Vec<String> {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   print(family.name, family.type, len(family.samples))\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "the Prometheus parser is not installed: pip install prometheus_client (scripts/test does)"
    );
    assert!(
        output.status.success(),
        "Prometheus' parser refused the exposition: {stderr}\n{text}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn metrics_show_every_family_with_help_and_type_and_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    // The authorization server must know jwksd's JWKS URL before jwksd starts: bind first.
    let public = loopback_listener();
    let oauth = OAuthServer::start(&format!("{}/.well-known/jwks.json", url_of(&public)), &[]);
    let config = format!(
        r#"
[keysets.default]
alg = "ES384"
[clients.test]
client_id = "jwksd-test-client"
token_endpoint = "{}"
scope = "system/Patient.read"
[callers.svc]
token_sha256 = "{}"
clients = ["test"]
"#,
        oauth.token_endpoint,
        sha256_hex(CALLER)
    );
    let app = spawn_app_on(dir.path(), &config, public, &TestClock::default()).await;
    let before = scrape(&app).await;

    let jwks = app.get_public("/.well-known/jwks.json").await;
    assert_eq!(jwks.status(), 200);
    let etag = jwks.headers()["etag"].clone();
    let not_modified = app
        .http
        .get(format!("{}/jwks/default.json", app.public))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let signed: Value = app
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
    let kid = signed["kid"].as_str().unwrap().to_owned();
    let refused = app
        .http
        .post(format!("{}/v1/assertions", app.private))
        .bearer_auth("not-a-caller-token")
        .json(&json!({"client_id": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for expected in ["miss", "hit"] {
        let token = app
            .http
            .post(format!("{}/v1/tokens", app.private))
            .bearer_auth(CALLER)
            .json(&json!({"client_id": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(token.status(), 200, "{}", token.text().await.unwrap());
        assert_eq!(token.headers()["x-jwksd-cache"], expected);
    }
    let after = scrape(&app).await;

    for (name, kind) in FAMILIES {
        assert_eq!(
            after.types.get(*name).map(String::as_str),
            Some(*kind),
            "# TYPE of {name} in\n{}",
            after.text
        );
        assert!(
            after.help.get(*name).is_some_and(|h| !h.is_empty()),
            "# HELP of {name}"
        );
    }
    let moved = |series: &str| after.value(series) - before.value(series);
    // The authorization server fetches the JWKS too, so at least the test's own fetch.
    assert!(moved("jwksd_jwks_requests_total{keyset=\"default\",status=\"200\"}") >= 1.0);
    assert_eq!(
        moved("jwksd_jwks_requests_total{keyset=\"default\",status=\"304\"}"),
        1.0
    );
    // One for the caller, one sent in the token request.
    assert_eq!(
        moved(&format!(
            "jwksd_assertions_signed_total{{client_id=\"jwksd-test-client\",kid=\"{kid}\"}}"
        )),
        2.0,
        "{}",
        after.text
    );
    assert_eq!(moved("jwksd_assertions_issued_total"), 1.0);
    assert_eq!(
        moved("jwksd_requests_refused_total{reason=\"unauthorized\"}"),
        1.0
    );
    assert_eq!(
        moved("jwksd_token_requests_upstream_total{client=\"test\",outcome=\"issued\"}"),
        1.0
    );
    assert_eq!(moved("jwksd_token_cache_hits_total{client=\"test\"}"), 1.0);
    assert_eq!(
        moved("jwksd_token_cache_misses_total{client=\"test\"}"),
        1.0
    );
    assert!(moved("jwksd_audit_write_duration_seconds_count") >= 1.0);
    assert_eq!(
        after.present("jwksd_audit_write_duration_seconds_count"),
        after.present("jwksd_audit_write_duration_seconds_bucket{le=\"+Inf\"}")
    );
    assert_eq!(
        after.present("jwksd_store_errors_total{operation=\"append_audit\"}"),
        0.0
    );

    let age = after.present(&format!(
        "jwksd_key_age_seconds{{keyset=\"default\",kid=\"{kid}\",state=\"current\"}}"
    ));
    assert!((0.0..3600.0).contains(&age), "{age}");
    assert!(
        after.present(&format!(
            "jwksd_current_key_signing_seconds{{keyset=\"default\",kid=\"{kid}\"}}"
        )) >= 0.0
    );
    assert!(after.present("jwksd_next_key_published_seconds{keyset=\"default\"}") >= 0.0);
    // Rotation every 90 days by default: the next change is the scheduled rotation.
    let next_change = after.present("jwksd_keyset_next_change_seconds{keyset=\"default\"}");
    assert!(
        (89.0 * 86_400.0..=90.0 * 86_400.0).contains(&next_change),
        "{next_change}"
    );
    assert_eq!(
        after.present("jwksd_keyset_rotation_period_seconds{keyset=\"default\"}"),
        7_776_000.0
    );

    let parsed = reference_parse(&after.text);
    for (name, _) in FAMILIES {
        // The reference parser names counters without their `_total`.
        let bare = name.strip_suffix("_total").unwrap_or(name);
        assert!(parsed.iter().any(|p| p == bare), "{bare} not in {parsed:?}");
    }
    drop(oauth);
    app.stop().await;
}

/// The metric names an alert rule's expression uses: every `jwksd_...` word, without the
/// suffixes a histogram's series add.
fn metric_names_in(rules: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in rules.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("jwksd_") {
            let word: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[start + word.len()..];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(&word)
                .to_owned();
            names.push(name);
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_example_alert_rules_use_is_one_metrics_shows() {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
    )
    .unwrap();
    let used = metric_names_in(&rules);
    assert!(used.len() >= 5, "the rules use {used:?}");
    let families: Vec<&str> = FAMILIES.iter().map(|(name, _)| *name).collect();
    for name in &used {
        // Alert names (`JwksdNextKeyMissing`) are not metrics; only `jwksd_` words are.
        assert!(
            families.contains(&name.as_str()),
            "the alert rules use {name}, which /metrics does not show"
        );
    }
    // And each is really exposed by a running jwksd, not only listed here.
    let dir = tempfile::tempdir().unwrap();
    let app =
        crate::helpers::spawn_app_with(dir.path(), "[keysets.default]\nalg = \"ES256\"\n").await;
    let scraped = scrape(&app).await;
    for name in &used {
        assert!(
            scraped.types.contains_key(name),
            "{name} not in\n{}",
            scraped.text
        );
    }
    app.stop().await;
}
