//! The fetcher record (who fetched each JWKS, from where, which kids), rotation gated on it
//! (`rotation_requires_fetch`), and "when is the next change" in the admin API and the CLI.

use std::time::{Duration, Instant};

use jwksd::api::{FetcherList, GateState, KeyList, KeysetList, Rotation};
use reqwest::Method;

use crate::helpers::{
    assert_problem, on_postgres, postgres_only, run_sql, spawn_app_unscheduled, spawn_app_with,
    spawn_replica, TestApp, EC_DEFAULT,
};

const H: i64 = 3600;
const D: i64 = 86_400;

async fn fetchers(app: &TestApp, keyset: &str) -> FetcherList {
    let response = app
        .admin(Method::GET, &format!("/admin/v1/keysets/{keyset}/fetchers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The fetcher list once `done` holds for it (the record is written every 2 s).
async fn fetchers_once(
    app: &TestApp,
    keyset: &str,
    done: impl Fn(&FetcherList) -> bool,
) -> FetcherList {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = fetchers(app, keyset).await;
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the fetcher record never showed it: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_agent(list: &FetcherList, agent: &str) -> bool {
    list.fetchers.iter().any(|f| f.user_agent == agent)
}

async fn fetch_jwks(
    app: &TestApp,
    path: &str,
    agent: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app
        .http
        .get(format!("{}{path}", app.public))
        .header("user-agent", agent);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_fetcher_appears_after_a_jwks_request_with_its_user_agent_and_the_kids_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let served = app.kids("default").await;
    let response = fetch_jwks(
        &app,
        "/.well-known/jwks.json",
        "Epic-Interconnect/2024.1",
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    // A 304 also means "holds the current document": its kids count as served.
    let revalidated = fetch_jwks(
        &app,
        "/jwks/default.json",
        "Cerner-JWKS-Cache",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(revalidated.status(), 304);
    // A HEAD holds nothing.
    let head = app
        .http
        .head(format!("{}/jwks/default.json", app.public))
        .header("user-agent", "uptime-probe")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    let list = fetchers_once(&app, "default", |l| {
        has_agent(l, "Epic-Interconnect/2024.1") && has_agent(l, "Cerner-JWKS-Cache")
    })
    .await;
    assert_eq!(list.keyset, "default");
    for agent in ["Epic-Interconnect/2024.1", "Cerner-JWKS-Cache"] {
        let fetcher = list
            .fetchers
            .iter()
            .find(|f| f.user_agent == agent)
            .unwrap();
        assert_eq!(fetcher.network, "127.0.0.0/24");
        let kids: Vec<&str> = fetcher.kids.iter().map(|k| k.kid.as_str()).collect();
        let mut expected: Vec<&str> = served.iter().map(String::as_str).collect();
        let mut got = kids.clone();
        expected.sort();
        got.sort();
        assert_eq!(
            got, expected,
            "{agent} was served the current and the next kid"
        );
        assert!(fetcher.seen_current && fetcher.seen_next, "{fetcher:?}");
        assert!(fetcher.first_seen.is_some() && fetcher.last_seen.is_some());
        assert!(fetcher
            .kids
            .iter()
            .all(|k| k.state.is_some() && k.first_served.is_some()));
    }
    assert!(!has_agent(&list, "uptime-probe"), "{list:?}");
    // The test's own first fetch sent no user agent: it is a fetcher too, named by its
    // network alone.
    assert!(has_agent(&list, ""), "{list:?}");
    assert_eq!(list.fetchers.len(), 3);
    // An unknown key set is a 404 problem, as everywhere in the admin API.
    let unknown = app
        .admin(Method::GET, "/admin/v1/keysets/nope/fetchers")
        .send()
        .await
        .unwrap();
    assert_problem(unknown, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_an_untrusted_peer_and_honoured_from_a_trusted_one() {
    // Loopback is not among the trusted proxies: the header is the client's word only.
    let untrusted_dir = tempfile::tempdir().unwrap();
    let untrusted = spawn_app_with(
        untrusted_dir.path(),
        &format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{EC_DEFAULT}"),
    )
    .await;
    let xff = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(
        fetch_jwks(&untrusted, "/jwks/default.json", "Spoofer/1", &xff)
            .await
            .status(),
        200
    );
    let list = fetchers_once(&untrusted, "default", |l| has_agent(l, "Spoofer/1")).await;
    assert_eq!(
        list.fetchers[0].network, "127.0.0.0/24",
        "the TCP peer, not the header"
    );
    untrusted.stop().await;

    // Loopback is the proxy: the rightmost address it did not add itself is the source, and
    // whatever the client claimed to the left of it is not believed.
    let trusted_dir = tempfile::tempdir().unwrap();
    let trusted = spawn_app_with(
        trusted_dir.path(),
        &format!("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{EC_DEFAULT}"),
    )
    .await;
    let xff = [("x-forwarded-for", "198.51.100.77, 203.0.113.9")];
    assert_eq!(
        fetch_jwks(&trusted, "/jwks/default.json", "Behind-Proxy/1", &xff)
            .await
            .status(),
        200
    );
    let list = fetchers_once(&trusted, "default", |l| has_agent(l, "Behind-Proxy/1")).await;
    assert_eq!(list.fetchers[0].network, "203.0.113.0/24");
    trusted.stop().await;
}

/// The JWKS path writes nothing to the store: with the fetcher table locked by another
/// client, the JWKS still answers at once, nothing reaches the record, and the fetch is in
/// the record soon after the lock is released.
#[tokio::test]
async fn the_jwks_answers_while_the_fetcher_record_cannot_be_written_and_the_record_arrives_after()
{
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let locker = Locker::lock(dir.path()).await;
    for _ in 0..5 {
        let response = fetch_jwks(&app, "/jwks/default.json", "Fetched-While-Locked/1", &[]).await;
        assert_eq!(response.status(), 200);
    }
    // Two flush intervals and more: the write is waiting for the lock.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !has_agent(&fetchers(&app, "default").await, "Fetched-While-Locked/1"),
        "nothing can be written while the table is locked"
    );
    assert_eq!(
        fetch_jwks(&app, "/jwks/default.json", "Fetched-While-Locked/1", &[])
            .await
            .status(),
        200
    );
    locker.release().await;
    fetchers_once(&app, "default", |l| has_agent(l, "Fetched-While-Locked/1")).await;
    app.stop().await;
}

/// Another client holding the write lock the fetcher record needs: SQLite's write lock, or on
/// PostgreSQL a lock on the fetcher table that lets readers through.
enum Locker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Locker {
    async fn lock(dir: &std::path::Path) -> Locker {
        use sqlx::Connection;
        if let Some(url) = crate::helpers::database_url(dir) {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE fetchers IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            return Locker::Postgres(conn);
        }
        let db = dir.join("data/jwksd.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .unwrap();
        Locker::Sqlite(conn)
    }

    async fn release(self) {
        match self {
            Locker::Sqlite(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
            Locker::Postgres(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn two_replicas_report_the_same_fetchers() {
    if postgres_only("two jwksd on one database") {
        return;
    }
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = spawn_app_with(first_dir.path(), EC_DEFAULT).await;
    let second = spawn_replica(first_dir.path(), second_dir.path(), EC_DEFAULT).await;
    assert_eq!(
        fetch_jwks(&first, "/jwks/default.json", "Fetched-From-First/1", &[])
            .await
            .status(),
        200
    );
    assert_eq!(
        fetch_jwks(&second, "/jwks/default.json", "Fetched-From-Second/1", &[])
            .await
            .status(),
        200
    );
    let both = |l: &FetcherList| {
        has_agent(l, "Fetched-From-First/1") && has_agent(l, "Fetched-From-Second/1")
    };
    let seen_by_first = fetchers_once(&first, "default", both).await;
    let seen_by_second = fetchers_once(&second, "default", both).await;
    assert_eq!(
        seen_by_first, seen_by_second,
        "every replica reports every fetcher"
    );
    assert_eq!(seen_by_first.fetchers.len(), 2);
    second.stop().await;
    first.stop().await;
}

/// A key set that rotates every two days, on evidence.
const GATED: &str = "[keysets.default]\nalg = \"ES256\"\nrotation_period = \"2d\"\nrotation_requires_fetch = true\n";

/// Two fetchers; one stops fetching before the next key exists. An unforced rotation is
/// refused naming it; the scheduled rotation waits for it until it drops out of
/// `fetcher_window`, then goes ahead; a forced rotation names the fetchers it risks.
#[tokio::test]
async fn a_gated_rotation_waits_for_a_fetcher_that_stopped_fetching_until_it_leaves_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_unscheduled(dir.path(), GATED).await;
    let now = jwksd::unix_now();
    let first = app.kid_in_state("default", "current").await.unwrap();
    let second = app.kid_in_state("default", "next").await.unwrap();
    // A rotation three hours ago (invented time): `third` has been published for 3 h.
    let rotated = app
        .keyring
        .rotate("default", true, now - 3 * H)
        .await
        .unwrap();
    assert_eq!(rotated.promoted, second);
    let third = rotated.new_next.unwrap();
    // The stopped EHR last fetched before `third` existed; the active one was served it 2 h ago.
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    app.fetchers.record(
        "default",
        "EHR-Stopped/1",
        ip("192.0.2.10"),
        &[first.clone(), second.clone()],
        now - 4 * H,
    );
    app.fetchers.record(
        "default",
        "EHR-Active/1",
        ip("198.51.100.20"),
        &[second.clone(), third.clone(), first.clone()],
        now - 2 * H,
    );
    app.fetchers.flush(now).await.unwrap();
    let stopped = "EHR-Stopped/1 from 192.0.2.0/24";

    let refused = app.rotate("default", false).await;
    assert!(
        refused.headers().get("retry-after").is_none(),
        "only its next fetch can help"
    );
    let problem = assert_problem(refused, 409).await;
    assert_eq!(problem["type"], "urn:jwksd:problem:next-key-not-fetched");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(stopped) && detail.contains(&third),
        "{detail}"
    );
    assert!(!detail.contains("EHR-Active"), "it has the key: {detail}");
    assert_eq!(
        app.kid_in_state("default", "current").await.unwrap(),
        second,
        "nothing changed"
    );

    let keysets: KeysetList = app
        .admin(Method::GET, "/admin/v1/keysets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let info = &keysets.keysets[0];
    assert!(info.rotation_requires_fetch);
    assert_eq!(
        (info.fetcher_window_seconds, info.rotation_deadline_seconds),
        (7 * D, 7 * D)
    );
    let gate = &info.schedule.as_ref().unwrap().rotation_gate;
    assert_eq!(gate.state, GateState::NotDue);
    assert_eq!(gate.unseen_by, [stopped]);
    // The status page says the same, from the same schedule.
    let cookie = crate::status_page::session_cookie(&app).await;
    let page = crate::status_page::get_page(&app, "/", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    let gate_on_page = page
        .split_once("data-gate=\"")
        .and_then(|(_, rest)| rest.split_once("</dd>"))
        .map(|(gate, _)| gate)
        .unwrap_or_else(|| panic!("no rotation gate on the status page:\n{page}"));
    assert!(
        gate_on_page.starts_with("not_due") && gate_on_page.contains(stopped),
        "{gate_on_page}"
    );

    // Due (two days after `second` began signing): held for the stopped EHR.
    let due = now - 3 * H + 2 * D;
    app.keyring.tick(due + H).await.unwrap();
    assert_eq!(
        app.kid_in_state("default", "current").await.unwrap(),
        second,
        "waiting"
    );
    let schedule = app.keyring.schedule("default", due + H).await.unwrap();
    let jwksd::rotation::GateStatus::Waiting {
        unseen, deadline, ..
    } = schedule.gate
    else {
        panic!("{:?}", schedule.gate)
    };
    assert_eq!(deadline, due + 7 * D);
    assert_eq!(unseen.len(), 1);
    assert_eq!(unseen[0].fetcher, stopped);

    // Seven days after its last fetch it is out of the window, and the rotation goes.
    app.keyring.tick(now - 4 * H + 7 * D + 60).await.unwrap();
    assert_eq!(app.kid_in_state("default", "current").await.unwrap(), third);

    // Forced, now: the new next key was served to no one, and the answer says whom it risks.
    let forced = app.rotate("default", true).await;
    assert_eq!(forced.status(), 200);
    let outcome: Rotation = forced.json().await.unwrap();
    assert!(outcome.forced);
    assert_eq!(outcome.unseen_by.len(), 2, "{outcome:?}");
    assert!(outcome.unseen_by.iter().any(|f| f == stopped));
    assert!(outcome
        .warning
        .unwrap()
        .contains("EHR-Active/1 from 198.51.100.0/24"));
    app.stop().await;
}

fn unix(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

async fn key_list(app: &TestApp) -> KeyList {
    app.admin(Method::GET, "/admin/v1/keysets/default/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_next_rotation_and_removal_and_each_revocation_show_in_the_api_and_keys_list() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_unscheduled(dir.path(), EC_DEFAULT).await;
    let list = key_list(&app).await;
    let schedule = list.schedule.clone().unwrap();
    let current = list
        .keys
        .iter()
        .find(|k| k.state.as_str() == "current")
        .unwrap();
    assert_eq!(
        unix(schedule.next_rotation_at.as_deref().unwrap()),
        unix(current.activated_at.as_deref().unwrap()) + 90 * D,
        "rotation_period is 90 days"
    );
    assert_eq!(schedule.next_removal_at, None);
    assert_eq!(schedule.rotation_gate.state, GateState::Off);

    // A forced rotation retires the current key: its removal is the next one.
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let next = app.kid_in_state("default", "next").await.unwrap();
    assert_eq!(app.revoke(&next).await.status(), 200);
    let list = key_list(&app).await;
    let schedule = list.schedule.clone().unwrap();
    let retired = list
        .keys
        .iter()
        .find(|k| k.state.as_str() == "retired")
        .unwrap();
    assert_eq!(schedule.next_removal_at, retired.remove_at);
    let revoked = list.keys.iter().find(|k| k.kid == next).unwrap();
    let revoked_at = revoked.revoked_at.clone().unwrap();
    let keysets: KeysetList = app
        .admin(Method::GET, "/admin/v1/keysets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keysets.keysets[0].schedule.as_ref(),
        Some(&schedule),
        "one schedule in both answers"
    );

    let cwd = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["keys", "list"])
        .current_dir(cwd.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWKSD_SERVER", &app.private)
        .env("JWKSD_ADMIN_TOKEN", &app.admin_token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let next_rotation = schedule.next_rotation_at.unwrap();
    assert!(
        text.contains(&format!("next rotation: {next_rotation}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "next removal:  {}",
            retired.remove_at.as_deref().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("REVOKED"), "{text}");
    let line = text.lines().find(|l| l.starts_with(&next)).unwrap();
    assert!(
        line.contains("revoked") && line.trim_end().ends_with(revoked_at.as_str()),
        "{line}"
    );
    app.stop().await;
}

/// The record lives in tables of its own: rows there that jwksd cannot read are left out of
/// the list, and neither they nor the record's tables keep the keys from loading.
#[tokio::test]
async fn unreadable_fetcher_rows_are_left_out_and_never_stop_the_keys_from_loading() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(
        fetch_jwks(&app, "/jwks/default.json", "Real-EHR/1", &[])
            .await
            .status(),
        200
    );
    fetchers_once(&app, "default", |l| has_agent(l, "Real-EHR/1")).await;
    let junk = if on_postgres() {
        "INSERT INTO fetchers VALUES ('default', 'Junk', 'not-a-network', -5, -5)"
    } else {
        "INSERT INTO fetchers VALUES ('default', 'Junk', 'x', 'not a time', 'not a time')"
    };
    run_sql(dir.path(), &[junk]).await;
    let list = fetchers(&app, "default").await;
    assert!(has_agent(&list, "Real-EHR/1"));
    if !on_postgres() {
        // SQLite stored the text in the time columns; PostgreSQL refused it, so its row is
        // merely odd there.
        assert!(!has_agent(&list, "Junk"), "{list:?}");
    }
    app.stop().await;
    let again = spawn_app_with(dir.path(), EC_DEFAULT).await;
    assert_eq!(
        again.kids("default").await.len(),
        2,
        "the keys load as before"
    );
    assert!(has_agent(&fetchers(&again, "default").await, "Real-EHR/1"));
    again.stop().await;
}

/// A fetcher that never gets the next key holds a scheduled rotation only until
/// `rotation_deadline`; then it rotates anyway, and the audit trail says whom it did not
/// wait for.
#[tokio::test]
async fn past_rotation_deadline_a_gated_rotation_goes_ahead_and_the_audit_trail_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        spawn_app_unscheduled(dir.path(), &format!("{GATED}rotation_deadline = \"1d\"\n")).await;
    let now = jwksd::unix_now();
    let first = app.kid_in_state("default", "current").await.unwrap();
    let next = app.kid_in_state("default", "next").await.unwrap();
    // Its copy predates the next key, and it never fetched again.
    let ip = "192.0.2.99".parse().unwrap();
    app.fetchers.record(
        "default",
        "Stale-Cache/1",
        ip,
        std::slice::from_ref(&first),
        now - H,
    );
    app.fetchers.flush(now).await.unwrap();
    let due = now + 2 * D;
    app.keyring.tick(due + H).await.unwrap();
    assert_eq!(
        app.kid_in_state("default", "current").await.unwrap(),
        first,
        "waiting"
    );
    app.keyring.tick(due + D + 60).await.unwrap();
    assert_eq!(
        app.kid_in_state("default", "current").await.unwrap(),
        next,
        "the deadline passed"
    );
    let page: jwksd::api::AuditPage = app
        .admin(Method::GET, "/admin/v1/audit?event=key.promoted")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let detail = page.records.last().unwrap().detail.clone().unwrap();
    assert_eq!(detail["rotation_deadline_passed"], true, "{detail}");
    assert_eq!(detail["unseen_by"][0], "Stale-Cache/1 from 192.0.2.0/24");
    app.stop().await;
}
