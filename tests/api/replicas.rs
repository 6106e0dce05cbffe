//! Several jwksd on one PostgreSQL database (PostgreSQL only; on SQLite each store has one
//! jwksd): a change committed by one replica reaches the other's JWKS within the documented
//! bound (`server.poll_interval`, 5 s by default; by notification usually far sooner), and a
//! storm of concurrent rotations and signing requests on both leaves one consistent key set
//! that both serve.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    database_url, postgres_only, spawn_app_with, spawn_replica, TestApp, EC_DEFAULT,
};
use crate::signing::{
    request_assertion, signing_config, verify_independently, BILLING_TOKEN, ECW_TOKEN_URL,
    EXPORT_TOKEN,
};

/// The documented bound on convergence: the default `server.poll_interval`.
const BOUND: Duration = Duration::from_secs(5);
/// Slack on top of the bound, for the re-read itself on a loaded test machine.
const MARGIN: Duration = Duration::from_secs(2);

async fn etag(app: &TestApp, keyset: &str) -> String {
    let response = app.get_public(&format!("/jwks/{keyset}.json")).await;
    assert_eq!(response.status(), 200);
    response.headers()["etag"].to_str().unwrap().to_owned()
}

/// Polls both replicas until they serve the same ETag for `keyset`; returns it and the time
/// since `since`. Fails once the bound plus the margin has passed.
async fn converge(a: &TestApp, b: &TestApp, keyset: &str, since: Instant) -> (String, Duration) {
    loop {
        let (first, second) = (etag(a, keyset).await, etag(b, keyset).await);
        if first == second {
            return (first, since.elapsed());
        }
        assert!(
            since.elapsed() < BOUND + MARGIN,
            "after {:?} the replicas still serve different JWKS for {keyset}: {first} and {second}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (kid, state) of every key of `keyset` as the admin API of `app` lists them, in the order
/// it lists them: every replica lists one key set in one order (newest first by creation
/// time, then by kid), also keys made in the same second, whether it made them or re-read
/// them.
async fn listed(app: &TestApp, keyset: &str) -> Vec<(String, String)> {
    app.keys(keyset)
        .await
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_rotation_on_one_replica_reaches_the_others_jwks_within_the_poll_interval() {
    if postgres_only("replicas share one database") {
        return;
    }
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_app_with(one.path(), EC_DEFAULT).await;
    let b = spawn_replica(one.path(), two.path(), EC_DEFAULT).await;
    let before = etag(&a, "default").await;
    assert_eq!(etag(&b, "default").await, before, "one store, one JWKS");

    for (from, to, name) in [(&a, &b, "A to B"), (&b, &a, "B to A")] {
        let sent = Instant::now();
        let response = from.rotate("default", true).await;
        assert_eq!(response.status(), 200);
        let answered = Instant::now();
        let outcome: Value = response.json().await.unwrap();
        let changed = etag(from, "default").await;
        let (served, took) = converge(from, to, "default", answered).await;
        assert_eq!(
            served, changed,
            "{name}: the other replica serves the new JWKS"
        );
        eprintln!(
            "convergence {name}: the other replica served the rotation {took:?} after it was \
             answered ({:?} after it was sent)",
            sent.elapsed()
        );
        assert_eq!(
            to.kid_in_state("default", "current").await.as_deref(),
            outcome["promoted"].as_str(),
            "{name}: the other replica signs with the promoted key"
        );
        assert_eq!(listed(from, "default").await, listed(to, "default").await);
    }
    assert_ne!(etag(&a, "default").await, before);
    a.stop().await;
    b.stop().await;
}

/// How many connections to the database in `pool` are change listeners (their last
/// statement is the `LISTEN`).
async fn listeners(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'LISTEN %'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_change_made_while_the_listeners_are_cut_off_still_arrives_and_they_reconnect() {
    if postgres_only("replicas share one database") {
        return;
    }
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_app_with(one.path(), EC_DEFAULT).await;
    let b = spawn_replica(one.path(), two.path(), EC_DEFAULT).await;
    let pool = sqlx::PgPool::connect(&database_url(one.path()).unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + BOUND;
    while listeners(&pool).await < 2 {
        assert!(Instant::now() < deadline, "both replicas listen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The database ends both listeners' connections, and a change is committed at once:
    // its notification may reach nobody (a listener that reconnects re-reads the keys, and
    // the poll bounds the rest).
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ended, [true, true]);
    let response = a.rotate("default", true).await;
    assert_eq!(response.status(), 200);
    let (_, took) = converge(&a, &b, "default", Instant::now()).await;
    eprintln!("with the listeners cut off, B served A's rotation after {took:?}");
    // Both listen again by themselves, and the next change arrives as before.
    let deadline = Instant::now() + BOUND;
    while listeners(&pool).await < 2 {
        assert!(Instant::now() < deadline, "the listeners reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.close().await;
    let response = b.rotate("default", true).await;
    assert_eq!(response.status(), 200);
    let (_, took) = converge(&b, &a, "default", Instant::now()).await;
    eprintln!("after reconnecting, A served B's rotation after {took:?}");
    assert_eq!(listed(&a, "default").await, listed(&b, "default").await);
    a.stop().await;
    b.stop().await;
}

/// What one request of the storm was and how it was answered.
struct Answer {
    what: String,
    status: u16,
    body: Value,
}

impl Answer {
    async fn of(what: String, response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
        Answer { what, status, body }
    }

    fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_rotations_and_signing_on_two_replicas_leaves_one_consistent_key_set() {
    if postgres_only("replicas share one database") {
        return;
    }
    const ROTATIONS: usize = 100;
    const SIGNERS: usize = 4;
    const SIGNATURES: usize = 25;
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let toml = signing_config("");
    let a = Arc::new(spawn_app_with(one.path(), &toml).await);
    let b = Arc::new(spawn_replica(one.path(), two.path(), &toml).await);

    let mut tasks = Vec::new();
    for (name, app) in [("A", &a), ("B", &b)] {
        for n in 0..ROTATIONS {
            let app = app.clone();
            let force = n % 2 == 0;
            tasks.push(tokio::spawn(async move {
                let what = format!("rotation {n} on {name} (forced: {force})");
                vec![Answer::of(what, app.rotate("default", force).await).await]
            }));
        }
        for n in 0..SIGNERS {
            let app = app.clone();
            let token = if n % 2 == 0 {
                BILLING_TOKEN
            } else {
                EXPORT_TOKEN
            };
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..SIGNATURES {
                    let response =
                        request_assertion(&app, token, json!({"client_id": "ecw"})).await;
                    answers.push(Answer::of(format!("signing {n}.{i} on {name}"), response).await);
                }
                answers
            }));
        }
    }
    let started = Instant::now();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    let stormed = started.elapsed();

    // Never a 500, never an integrity failure: every answer is one the brief allows.
    let mut rotated = Vec::new();
    let mut signed = Vec::new();
    let (mut conflicts, mut too_early, mut refused_signing) = (0, 0, 0);
    for answer in &answers {
        let Answer { what, status, body } = answer;
        assert!(
            *status != 500 && answer.problem_type() != "urn:jwksd:problem:store-integrity",
            "{what}: {status} {body}"
        );
        if what.starts_with("rotation") {
            match (*status, answer.problem_type()) {
                (200, _) => rotated.push(body.clone()),
                (409, "urn:jwksd:problem:concurrent-change") if what.ends_with("true)") => {
                    conflicts += 1
                }
                (409, "urn:jwksd:problem:rotation-too-early") if what.ends_with("false)") => {
                    too_early += 1
                }
                _ => panic!("{what}: {status} {body}"),
            }
        } else {
            match *status {
                200 => signed.push(body["client_assertion"].as_str().unwrap().to_owned()),
                409 | 503 => {
                    assert!(
                        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                        "{what}: a refusal says why: {status} {body}"
                    );
                    refused_signing += 1;
                }
                _ => panic!("{what}: {status} {body}"),
            }
        }
    }
    assert_eq!(
        too_early, ROTATIONS,
        "every unforced rotation is too early (prepublish 75m)"
    );
    assert_eq!(
        rotated.len() + conflicts,
        ROTATIONS,
        "every forced rotation answered"
    );
    assert!(
        !rotated.is_empty(),
        "at least one forced rotation went through"
    );

    // Both replicas converge on one JWKS within the bound once the storm is over.
    let quiet = Instant::now();
    let (final_etag, took) = converge(&a, &b, "default", quiet).await;
    eprintln!(
        "storm: {} rotations applied, {conflicts} refused as concurrent, {} of {} signing \
         requests answered 200 ({refused_signing} refused) in {stormed:?}; both replicas \
         served one JWKS {took:?} after the last answer",
        rotated.len(),
        signed.len(),
        2 * SIGNERS * SIGNATURES
    );
    assert_eq!(etag(&a, "epic").await, etag(&b, "epic").await);

    // The database: exactly one current and one next key per key set, unique kids.
    let pool = sqlx::PgPool::connect(&database_url(one.path()).unwrap())
        .await
        .unwrap();
    let per_state: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT keyset, state, count(*) FROM keys WHERE state IN ('current', 'next') \
         GROUP BY keyset, state ORDER BY keyset, state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<(String, String, i64)> = ["default", "epic"]
        .iter()
        .flat_map(|k| {
            [
                (k.to_string(), "current".to_owned(), 1),
                (k.to_string(), "next".to_owned(), 1),
            ]
        })
        .collect();
    assert_eq!(per_state, expected);
    let (rows, kids): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT kid) FROM keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, kids, "unique kids");
    let stored: Vec<(String, String)> = sqlx::query_as(
        r#"SELECT kid, state FROM keys WHERE keyset = 'default'
               ORDER BY created_at DESC, kid COLLATE "C" DESC"#,
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    // Each applied rotation made one new key: the first two keys plus one per rotation.
    assert_eq!(stored.len(), 2 + rotated.len());

    // Both admin key lists say what the database says, in one order (newest first, by
    // creation time, then kid): one current key, unique kids.
    for (name, app) in [("A", &a), ("B", &b)] {
        let list = listed(app, "default").await;
        let kids: HashSet<&String> = list.iter().map(|(kid, _)| kid).collect();
        assert_eq!(kids.len(), list.len(), "{name}: unique kids");
        assert_eq!(
            list.iter().filter(|(_, state)| state == "current").count(),
            1,
            "{name}: one current key"
        );
        assert_eq!(
            list, stored,
            "{name}: the admin list is the database's, in order"
        );
    }

    // Every acknowledged rotation is there: its promoted key signed (current or retired
    // since) and its new successor exists.
    let states: std::collections::HashMap<&str, &str> = stored
        .iter()
        .map(|(kid, state)| (kid.as_str(), state.as_str()))
        .collect();
    for outcome in &rotated {
        let promoted = outcome["promoted"].as_str().unwrap();
        assert!(
            matches!(states.get(promoted), Some(&"current" | &"retired")),
            "promoted {promoted}: {:?}",
            states.get(promoted)
        );
        let new_next = outcome["new_next"].as_str().unwrap();
        assert!(
            states.contains_key(new_next),
            "new next {new_next} is stored"
        );
    }
    let promoted: HashSet<&str> = rotated
        .iter()
        .map(|o| o["promoted"].as_str().unwrap())
        .collect();
    assert_eq!(promoted.len(), rotated.len(), "no key was promoted twice");

    // Every assertion answered 200 verifies against the JWKS both replicas now serve.
    for jwt in &signed {
        verify_independently(&a, "default", jwt, ECW_TOKEN_URL, "ecw-client-id").await;
    }
    assert_eq!(etag(&a, "default").await, final_etag);
    // One audit chain, intact, however the two replicas interleaved their appends.
    let verified = jwksd::trail::verify_store(a.keyring.store().as_ref())
        .await
        .unwrap()
        .expect("the audit chain is intact");
    assert!(verified as usize >= signed.len() + rotated.len());

    for app in [a, b] {
        Arc::into_inner(app).unwrap().stop().await;
    }
}

/// A YAML value, as far as `deploy/compose.yaml` needs: block maps and lists by indentation,
/// plain and double-quoted scalars, flow lists kept as their text (they are JSON). Enough to
/// read that file, and it refuses (panics on) anything else, so the file stays this simple.
#[derive(Debug)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    List(Vec<Yaml>),
    Text(String),
}

impl Yaml {
    fn parse(text: &str) -> Yaml {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| (l.len() - l.trim_start().len(), l.trim()))
            .collect();
        let mut at = 0;
        let value = Yaml::block(&lines, &mut at, 0);
        assert_eq!(at, lines.len(), "unread line: {:?}", lines.get(at));
        value
    }

    fn block(lines: &[(usize, &str)], at: &mut usize, indent: usize) -> Yaml {
        let is_list = lines[*at].1.starts_with("- ");
        let (mut map, mut list) = (Vec::new(), Vec::new());
        while let Some(&(depth, line)) = lines.get(*at) {
            if depth < indent {
                break;
            }
            assert_eq!(depth, indent, "unexpected indentation: {line}");
            *at += 1;
            if is_list {
                let item = line.strip_prefix("- ").expect("a list item");
                list.push(Yaml::Text(unquote(item)));
                continue;
            }
            let (key, value) = line.split_once(':').expect("key: value");
            let value = value.trim();
            let value = if !value.is_empty() {
                Yaml::Text(unquote(value))
            } else {
                match lines.get(*at) {
                    Some(&(deeper, _)) if deeper > indent => Yaml::block(lines, at, deeper),
                    _ => Yaml::Map(Vec::new()),
                }
            };
            map.push((unquote(key), value));
        }
        if is_list {
            Yaml::List(list)
        } else {
            Yaml::Map(map)
        }
    }

    fn get(&self, key: &str) -> &Yaml {
        match self {
            Yaml::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no {key}")),
            _ => panic!("{key}: not a map"),
        }
    }

    fn entries(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(entries) => entries,
            _ => panic!("not a map: {self:?}"),
        }
    }

    fn text(&self) -> &str {
        match self {
            Yaml::Text(text) => text,
            _ => panic!("not a scalar: {self:?}"),
        }
    }

    fn items(&self) -> Vec<&str> {
        match self {
            Yaml::List(items) => items.iter().map(Yaml::text).collect(),
            _ => panic!("not a list: {self:?}"),
        }
    }
}

fn unquote(text: &str) -> String {
    let text = text.trim();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .to_owned()
}

/// `${NAME:-default}` as Compose substitutes it when `NAME` is unset.
fn compose_default(value: &str) -> String {
    match value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
    {
        Some((_, default)) => default.to_owned(),
        None => value.to_owned(),
    }
}

/// `deploy/compose.yaml` starts two jwksd replicas and PostgreSQL. Docker is not needed to
/// check what matters in it: every `JWKSD_` variable is one the configuration loader knows
/// (each replica's environment loads without a problem or a warning, on PostgreSQL, with
/// the secrets it names), both replicas share the master key and the database through the
/// same secret files, and their container health checks are `jwksd healthcheck` on `/readyz`.
#[test]
fn the_compose_file_runs_two_replicas_on_one_database_and_one_master_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/compose.yaml");
    let compose = Yaml::parse(&std::fs::read_to_string(path).unwrap());
    let services = compose.get("services");
    services.get("postgres");
    let secret_files: HashMap<&str, &str> = compose
        .get("secrets")
        .entries()
        .iter()
        .map(|(name, secret)| (name.as_str(), secret.get("file").text()))
        .collect();
    // What each secret holds, as the compose file's own instructions make it.
    let dir = tempfile::tempdir().unwrap();
    let contents = |name: &str| match name {
        "jwksd-master-key" => "ab".repeat(32),
        "jwksd-admin-token" => "cd".repeat(32),
        "jwksd-database-url" => {
            "postgres://jwksd:secret@postgres:5432/jwksd?sslmode=disable".to_owned()
        }
        other => panic!("a secret the test does not know: {other}"),
    };

    let mut replicas = Vec::new();
    for (name, service) in services.entries() {
        if name == "postgres" {
            continue;
        }
        let mounted = service.get("secrets").items();
        let mut env = Vec::new();
        let mut secrets_used = BTreeMap::new();
        for (variable, value) in service.get("environment").entries() {
            let value = compose_default(value.text());
            assert!(variable.starts_with("JWKSD_"), "{name}: {variable}");
            if jwksd::config::is_command_line_variable(variable) {
                continue;
            }
            let value = match value.strip_prefix("/run/secrets/") {
                Some(secret) => {
                    assert!(variable.ends_with("_FILE"), "{name}: {variable}");
                    assert!(mounted.contains(&secret), "{name}: {secret} is not mounted");
                    assert!(secret_files.contains_key(secret), "{secret} has no file");
                    secrets_used.insert(variable.clone(), secret_files[secret].to_owned());
                    let file = dir.path().join(secret);
                    std::fs::write(&file, contents(secret)).unwrap();
                    file.display().to_string()
                }
                None => value,
            };
            env.push((variable.clone(), value));
        }
        let config = jwksd::config::Config::load(None, env)
            .unwrap_or_else(|e| panic!("{name}: the configuration is refused: {e}"));
        assert!(config.warnings.is_empty(), "{name}: {:?}", config.warnings);
        match &config.server.database {
            jwksd::config::Database::Postgres(url) => {
                assert!(url.expose().contains("@postgres:5432/"), "{name}")
            }
            other => panic!("{name}: not PostgreSQL: {other:?}"),
        }
        let probe: Vec<String> =
            serde_json::from_str(service.get("healthcheck").get("test").text()).unwrap();
        assert_eq!(probe[0], "CMD", "{name}");
        assert!(
            probe[1].ends_with("/jwksd") && probe[2] == "healthcheck",
            "{name}: {probe:?}"
        );
        assert!(
            probe.iter().any(|a| a.ends_with("/readyz")),
            "{name}: {probe:?}"
        );
        replicas.push((name.clone(), secrets_used));
    }
    assert_eq!(replicas.len(), 2, "two replicas: {replicas:?}");
    let (a, b) = (&replicas[0].1, &replicas[1].1);
    for variable in [
        "JWKSD_SERVER__MASTER_KEY_FILE",
        "JWKSD_SERVER__DATABASE_URL_FILE",
    ] {
        assert!(a.contains_key(variable), "{variable} on {}", replicas[0].0);
        assert_eq!(
            a.get(variable),
            b.get(variable),
            "both replicas: {variable}"
        );
    }
}
