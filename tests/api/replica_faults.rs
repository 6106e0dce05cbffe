//! Faults under two replicas on one PostgreSQL database (PostgreSQL only): the database
//! stopped (immediate mode) in the middle of rotations and started again, and one replica
//! killed (SIGKILL) in the middle of rotations. No acknowledged rotation is lost, the key
//! set stays consistent, and the replicas recover without a restart of the survivors.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{database_url, postgres_only, spawn_app_with, spawn_replica, TestApp};
use crate::process::{audit_verify, Service};
use crate::signing::{request_assertion, signing_config, BILLING_TOKEN};

/// The documented bound on convergence: the default `server.poll_interval`.
const BOUND: Duration = Duration::from_secs(5);
/// Slack on top of the bound, for the re-read itself on a loaded test machine.
const MARGIN: Duration = Duration::from_secs(2);

/// A PostgreSQL of this test alone (the test stops and starts it), made by `scripts/pg`;
/// stopped and removed when dropped.
struct OwnPostgres {
    dir: PathBuf,
    url: String,
    port: String,
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        // The directory itself (mode 0700, ours): scripts/pg hands it to the server's user,
        // which could not reach a directory inside it.
        let dir = tempfile::tempdir().unwrap().keep();
        let output = Command::new("scripts/pg")
            .arg("start")
            .arg(&dir)
            .current_dir(repository())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/pg start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let port = url::Url::parse(&url).unwrap().port().unwrap().to_string();
        OwnPostgres { dir, url, port }
    }

    /// [`OwnPostgres::start`], committing synchronously. The throwaway server commits
    /// asynchronously (speed over durability), so an immediate stop could drop a commit
    /// already acknowledged to jwksd, even the first start's tables (seen: "relation keys
    /// does not exist" after the restart, once in four runs). A production database commits
    /// synchronously, and these tests are about jwksd, not about that setting.
    async fn start_durable() -> OwnPostgres {
        let pg = OwnPostgres::start();
        let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
        sqlx::query("ALTER SYSTEM SET synchronous_commit = on")
            .execute(&pool)
            .await
            .unwrap();
        let on: String = sqlx::query_scalar("SELECT pg_reload_conf()::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(on, "true");
        pool.close().await;
        pg
    }

    /// `pg_ctl ARGS` on this server's data directory, as the user that owns it (as
    /// `scripts/pg` runs it: `runuser` when we are root).
    fn pg_ctl(&self, args: &[&str]) {
        let bindir = pg_bindir();
        let data = self.dir.join("data");
        let mut command = if is_root() {
            let owner = Command::new("stat")
                .args(["-c", "%U"])
                .arg(&data)
                .output()
                .unwrap();
            let owner = String::from_utf8(owner.stdout).unwrap().trim().to_owned();
            let mut c = Command::new("runuser");
            c.args(["-u", &owner, "--"]).arg(bindir.join("pg_ctl"));
            c
        } else {
            Command::new(bindir.join("pg_ctl"))
        };
        let output = command.arg("-D").arg(&data).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the server at once, as a crash would (no checkpoint, clients cut off).
    fn crash(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
    }

    /// Starts it again on the same data directory and port (crash recovery runs first).
    fn restart(&self) {
        let log = self.dir.join("server.log");
        let port = format!("-p {}", self.port);
        self.pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &port,
            "start",
        ]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("scripts/pg")
            .arg("stop")
            .arg(&self.dir)
            .current_dir(repository())
            .status();
    }
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(id.stdout).unwrap().trim() == "0"
}

/// Where `initdb` and `pg_ctl` are, found as `scripts/pg` finds them.
fn pg_bindir() -> PathBuf {
    let output = Command::new("bash")
        .args([
            "-c",
            "d=$(command -v initdb 2>/dev/null) && dirname \"$d\" || \
             ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1",
        ])
        .output()
        .unwrap();
    let dir = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    assert!(
        dir.join("pg_ctl").exists(),
        "no pg_ctl in {}",
        dir.display()
    );
    dir
}

async fn etag(app: &TestApp, keyset: &str) -> String {
    let response = app.get_public(&format!("/jwks/{keyset}.json")).await;
    assert_eq!(response.status(), 200);
    response.headers()["etag"].to_str().unwrap().to_owned()
}

async fn etag_at(http: &reqwest::Client, public: &str, keyset: &str) -> String {
    let response = http
        .get(format!("{public}/jwks/{keyset}.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["etag"].to_str().unwrap().to_owned()
}

/// The database's view of the key set: (kid, state) of every key, and the number of current
/// and next keys per key set.
async fn stored_keys(url: &str) -> (BTreeSet<(String, String)>, Vec<(String, String, i64)>) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let per_state: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT keyset, state, count(*) FROM keys WHERE state IN ('current', 'next') \
         GROUP BY keyset, state ORDER BY keyset, state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (rows, kids): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT kid) FROM keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, kids, "unique kids");
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT kid, state FROM keys WHERE keyset = 'default'")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    (stored.into_iter().collect(), per_state)
}

fn one_current_and_next_per_keyset() -> Vec<(String, String, i64)> {
    ["default", "epic"]
        .iter()
        .flat_map(|k| {
            [
                (k.to_string(), "current".to_owned(), 1),
                (k.to_string(), "next".to_owned(), 1),
            ]
        })
        .collect()
}

/// Every rotation answered 200 is in the store: its promoted key (current, or retired by a
/// later rotation) and its new next key; and no key was promoted twice.
fn assert_rotations_present(rotated: &[Value], stored: &BTreeSet<(String, String)>) {
    let states: HashMap<&str, &str> = stored
        .iter()
        .map(|(kid, state)| (kid.as_str(), state.as_str()))
        .collect();
    for outcome in rotated {
        let promoted = outcome["promoted"].as_str().unwrap();
        assert!(
            matches!(states.get(promoted), Some(&"current" | &"retired")),
            "acknowledged rotation {outcome}: promoted key is {:?}",
            states.get(promoted)
        );
        let new_next = outcome["new_next"].as_str().unwrap();
        assert!(
            states.contains_key(new_next),
            "acknowledged rotation {outcome}: its new next key is stored"
        );
    }
    let promoted: HashSet<&str> = rotated
        .iter()
        .map(|o| o["promoted"].as_str().unwrap())
        .collect();
    assert_eq!(promoted.len(), rotated.len(), "no key was promoted twice");
}

/// With the database down: signing and a rotation refused as storage unavailable (503,
/// Retry-After), `/readyz` not ready; asked at once. Returns how long each answer took
/// (signing, rotation, readiness).
async fn refusals(name: &str, app: &TestApp) -> [Duration; 3] {
    let timed = |request: reqwest::RequestBuilder| async move {
        let sent = Instant::now();
        let response = request.send().await.unwrap();
        (response, sent.elapsed())
    };
    let sign = app
        .http
        .post(format!("{}/v1/assertions", app.private))
        .bearer_auth(BILLING_TOKEN)
        .json(&json!({"client_id": "ecw"}));
    let rotate = app.admin(
        reqwest::Method::POST,
        "/admin/v1/keysets/default/rotate?force=true",
    );
    let ready = app.http.get(format!("{}/readyz", app.public));
    let ((signed, t1), (rotated, t2), (readiness, t3)) =
        tokio::join!(timed(sign), timed(rotate), timed(ready));
    assert!(
        signed.headers().get("retry-after").is_some(),
        "{name}: signing refused with Retry-After"
    );
    let body = crate::helpers::assert_problem(signed, 503).await;
    assert_eq!(
        body["type"], "urn:jwksd:problem:storage-unavailable",
        "{name}: signing: {body}"
    );
    let body = crate::helpers::assert_problem(rotated, 503).await;
    assert_eq!(
        body["type"], "urn:jwksd:problem:storage-unavailable",
        "{name}: rotation: {body}"
    );
    assert!(
        readiness.headers().get("retry-after").is_some(),
        "{name}: not ready, with Retry-After"
    );
    let body = crate::helpers::assert_problem(readiness, 503).await;
    assert_eq!(
        body["type"], "urn:jwksd:problem:not-ready",
        "{name}: readiness: {body}"
    );
    [t1, t2, t3]
}

/// The longest a refusal may take while the database is down: well under the pool's 5 s
/// acquire timeout, so that a load balancer's health check and an internal caller get their
/// 503 at once. A behaviour bound, not a benchmark.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_stopped_signing_readiness_and_rotation_are_refused_at_once_and_recover()
{
    if postgres_only("the test stops its own PostgreSQL") {
        return;
    }
    let pg = OwnPostgres::start_durable().await;
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(one.path().join("postgres-database-url"), &pg.url).unwrap();
    let toml = signing_config("");
    let a = spawn_app_with(one.path(), &toml).await;
    let b = spawn_replica(one.path(), two.path(), &toml).await;
    // A has just signed (a pooled connection that the stop breaks); B has been idle since
    // it started (its first request after the stop finds no connection at all).
    let response = request_assertion(&a, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
    assert_eq!(response.status(), 200);
    let (served_a, served_b) = (etag(&a, "default").await, etag(&b, "default").await);

    pg.crash();
    let stopped = Instant::now();
    // At once, then again a few times while it stays down: every answer is a prompt 503.
    let mut slowest = Duration::ZERO;
    for round in 0..4 {
        for (name, app) in [("A", &a), ("B", &b)] {
            let times = refusals(&format!("{name}, round {round}"), app).await;
            for (what, took) in ["signing", "rotation", "readiness"].iter().zip(times) {
                assert!(
                    took < PROMPT,
                    "{name}, round {round}: {what} took {took:?} to be refused"
                );
                slowest = slowest.max(took);
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // The JWKS is served from memory throughout.
    assert_eq!(etag(&a, "default").await, served_a);
    assert_eq!(etag(&b, "default").await, served_b);
    let down_for = stopped.elapsed();

    // Back: both replicas sign, are ready and rotate again without a restart.
    pg.restart();
    let restarted = Instant::now();
    for (name, app) in [("A", &a), ("B", &b)] {
        loop {
            let signed = request_assertion(app, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
            let ready = app.get_public("/readyz").await;
            if signed.status() == 200 && ready.status() == 200 {
                break;
            }
            if restarted.elapsed() >= Duration::from_secs(15) {
                let (signed_status, ready_status) = (signed.status(), ready.status());
                panic!(
                    "{name}: not recovered 15 s after the database came back (signing \
                     {signed_status}: {}; readiness {ready_status}: {})",
                    signed.text().await.unwrap_or_default(),
                    ready.text().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let response = app.rotate("default", true).await;
        assert_eq!(response.status(), 200, "{name}: rotates again");
    }
    let recovered = restarted.elapsed();
    eprintln!(
        "database down for {down_for:?}: the slowest refusal took {slowest:?}; both replicas \
         signed, were ready and rotated {recovered:?} after it came back"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_mid_rotation_and_started_again_loses_no_acknowledged_rotation() {
    if postgres_only("the test stops its own PostgreSQL") {
        return;
    }
    let pg = OwnPostgres::start_durable().await;
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both replicas on the server's own database, which the test's server alone has.
    std::fs::write(one.path().join("postgres-database-url"), &pg.url).unwrap();
    let toml = signing_config("");
    let a = Arc::new(spawn_app_with(one.path(), &toml).await);
    let b = spawn_replica(one.path(), two.path(), &toml).await;
    assert_eq!(etag(&a, "default").await, etag(&b, "default").await);

    // Forced rotations one after another on A; after each 200, the ETag A then serves.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(u16, Value, Option<String>)>::new()));
    let rotator = {
        let (a, stop, answers) = (a.clone(), stop.clone(), answers.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let response = a.rotate("default", true).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                let served = if status == 200 {
                    Some(etag(&a, "default").await)
                } else {
                    None
                };
                answers.lock().unwrap().push((status, body, served));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers.lock().unwrap().len() < 8 {
        assert!(Instant::now() < deadline, "rotations before the stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pg.crash();
    let stopped = Instant::now();
    // The rotation in flight at the stop ends one way or the other; then no more.
    stop.store(true, Ordering::SeqCst);
    rotator.await.unwrap();
    let answers = answers.lock().unwrap().clone();
    let rotated: Vec<Value> = answers
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .map(|(_, body, _)| body.clone())
        .collect();
    for (status, body, _) in &answers {
        assert!(
            *status == 200
                || (*status == 503 && body["type"] == "urn:jwksd:problem:storage-unavailable"),
            "a rotation around the stop: {status} {body}"
        );
    }
    let last_served = answers
        .iter()
        .rev()
        .find_map(|(_, _, served)| served.clone())
        .unwrap();
    let before_b = etag(&b, "default").await;
    let served_by_a: HashSet<String> = answers.iter().filter_map(|(_, _, s)| s.clone()).collect();

    // While the database is down: the JWKS is served from memory, unchanged; signing and
    // rotating are refused as storage unavailable, with Retry-After; not ready.
    assert_eq!(etag(&a, "default").await, last_served, "A: its last JWKS");
    assert!(
        served_by_a.contains(&before_b) || before_b == last_served,
        "B serves a JWKS that A served"
    );
    let (refusals_a, refusals_b) = tokio::join!(refusals("A", &a), refusals("B", &b));
    assert_eq!(
        etag(&a, "default").await,
        last_served,
        "A: unchanged while down"
    );
    assert_eq!(
        etag(&b, "default").await,
        before_b,
        "B: unchanged while down"
    );
    let down_for = stopped.elapsed();

    // The database comes back; jwksd is not restarted.
    pg.restart();
    let restarted = Instant::now();
    let mut recovered = HashMap::new();
    for (name, app) in [("A", &*a), ("B", &b)] {
        loop {
            let response = request_assertion(app, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
            if response.status() == 200 {
                recovered.insert(name, restarted.elapsed());
                break;
            }
            assert_eq!(response.status(), 503, "{name}: only 503 while recovering");
            assert!(
                restarted.elapsed() < Duration::from_secs(20),
                "{name}: signing did not recover within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut rotated = rotated;
    for (name, app) in [("A", &*a), ("B", &b)] {
        let response = app.rotate("default", true).await;
        assert_eq!(response.status(), 200, "{name}: rotates again");
        rotated.push(response.json().await.unwrap());
    }
    let quiet = Instant::now();
    let converged = loop {
        let (first, second) = (etag(&a, "default").await, etag(&b, "default").await);
        if first == second {
            break quiet.elapsed();
        }
        assert!(
            quiet.elapsed() < BOUND + MARGIN,
            "after {:?} the replicas still serve different JWKS: {first} and {second}",
            quiet.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "database down for {down_for:?} ({} rotations acknowledged before; each refusal took \
         {refusals_a:?} on A, {refusals_b:?} on B); signing recovered {recovered:?} after the \
         restart; JWKS converged {converged:?} after the last rotation",
        rotated.len() - 2
    );

    let (stored, per_state) = stored_keys(&pg.url).await;
    assert_eq!(per_state, one_current_and_next_per_keyset());
    assert_rotations_present(&rotated, &stored);
    let verified = jwksd::trail::verify_store(a.keyring.store().as_ref())
        .await
        .unwrap()
        .expect("the audit chain is intact");
    assert!(verified as usize >= rotated.len());

    Arc::into_inner(a).unwrap().stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_rotation_loses_no_acknowledged_rotation_and_the_other_carries_on() {
    if postgres_only("replicas share one database") {
        return;
    }
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = database_url(one.path()).unwrap();
    std::fs::write(one.path().join("jwksd.toml"), signing_config("")).unwrap();
    let a = Service::start(one.path()).await;
    // B: its own data directory, the same database and master key.
    std::fs::write(two.path().join("postgres-database-url"), &url).unwrap();
    std::fs::write(
        two.path().join("jwksd.toml"),
        format!(
            "{}\n[server]\nmaster_key_file = \"{}\"\n",
            signing_config(""),
            one.path().join("data/master.key").display()
        ),
    )
    .unwrap();
    let b = Service::start(two.path()).await;
    let http = crate::helpers::http_client();
    let token_a = std::fs::read_to_string(one.path().join("data/admin.token")).unwrap();
    let token_b = std::fs::read_to_string(two.path().join("data/admin.token")).unwrap();

    // Forced rotations at A from four workers, until A stops answering.
    let rotated = Arc::new(Mutex::new(Vec::<Value>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (http, url, token, rotated) = (
            http.clone(),
            format!("{}/admin/v1/keysets/default/rotate?force=true", a.private),
            token_a.trim().to_owned(),
            rotated.clone(),
        );
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let Ok(response) = http.post(&url).bearer_auth(&token).send().await else {
                    return;
                };
                let status = response.status().as_u16();
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                match status {
                    200 => rotated.lock().unwrap().push(body),
                    409 => assert_eq!(
                        body["type"], "urn:jwksd:problem:concurrent-change",
                        "{body}"
                    ),
                    _ => panic!("rotation on A: {status} {body}"),
                }
            }
            panic!("A was not killed within 30 s");
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while rotated.lock().unwrap().len() < 10 {
        assert!(Instant::now() < deadline, "rotations before the kill");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.kill();
    let killed = Instant::now();
    for worker in workers {
        worker.await.unwrap();
    }
    let mut rotated = rotated.lock().unwrap().clone();

    // The database and B: every acknowledged rotation, one current key, unique kids.
    let (stored, per_state) = stored_keys(&url).await;
    assert_eq!(per_state, one_current_and_next_per_keyset());
    assert_rotations_present(&rotated, &stored);
    // B's admin list becomes the database's within the bound.
    let listed_by_b = || async {
        let page: Value = http
            .get(format!("{}/admin/v1/keysets/default/keys", b.private))
            .bearer_auth(token_b.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_owned(),
                    k["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<BTreeSet<_>>()
    };
    loop {
        if listed_by_b().await == stored {
            break;
        }
        assert!(
            killed.elapsed() < BOUND + MARGIN,
            "B's key list is not the database's {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B signs and rotates on.
    let response = b.assertion(BILLING_TOKEN, "ecw").await.unwrap();
    assert_eq!(response.status(), 200);
    let response = http
        .post(format!(
            "{}/admin/v1/keysets/default/rotate?force=true",
            b.private
        ))
        .bearer_auth(token_b.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    rotated.push(response.json().await.unwrap());

    // A again, on the same configuration: both serve one JWKS, the chain verifies.
    let a = Service::start(one.path()).await;
    let since = Instant::now();
    loop {
        let (first, second) = (
            etag_at(&http, &a.public, "default").await,
            etag_at(&http, &b.public, "default").await,
        );
        if first == second {
            break;
        }
        assert!(
            since.elapsed() < BOUND + MARGIN,
            "after {:?} the replicas still serve different JWKS: {first} and {second}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (stored, per_state) = stored_keys(&url).await;
    assert_eq!(per_state, one_current_and_next_per_keyset());
    assert_rotations_present(&rotated, &stored);
    assert_eq!(listed_by_b().await, stored);
    eprintln!(
        "A killed after {} acknowledged rotations; B matched the database and kept signing \
         and rotating; restarted A served B's JWKS {:?} after it was ready",
        rotated.len() - 1,
        since.elapsed()
    );
    a.stop();
    b.stop();
    let (ok, text) = audit_verify(one.path());
    assert!(ok, "{text}");
}
