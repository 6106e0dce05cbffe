//! Rotation, retirement, removal and revocation, through the admin API and the scheduler.

use crate::helpers::{assert_problem, spawn_app_unscheduled, spawn_app_with, EC_DEFAULT};

#[tokio::test]
async fn rotation_is_refused_while_next_is_younger_than_prepublish_and_accepted_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let current = app.kid_in_state("default", "current").await.unwrap();
    let next = app.kid_in_state("default", "next").await.unwrap();
    let before = app
        .get_public("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();

    let refused = app.rotate("default", false).await;
    let retry_after: i64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (4400..=4500).contains(&retry_after),
        "prepublish is 75 minutes: {retry_after}"
    );
    let problem = assert_problem(refused, 409).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&next), "{problem}");
    // Durations as the configuration writes them, not in raw seconds.
    assert!(
        detail.contains("must be published for 1h 15m (prepublish)") && !detail.contains("4500s"),
        "{detail}"
    );
    let after_refusal = app
        .get_public("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(before, after_refusal, "a refused rotation changes nothing");

    let forced = app.rotate("default", true).await;
    assert_eq!(forced.status(), 200);
    let outcome: jwksd::api::Rotation = forced.json().await.unwrap();
    assert_eq!(outcome.promoted, next);
    assert_eq!(outcome.retired.as_deref(), Some(current.as_str()));
    assert!(outcome.forced);
    assert!(
        outcome.warning.as_deref().unwrap().contains("reject"),
        "{outcome:?}"
    );
    let new_next = outcome.new_next.clone().unwrap();

    assert_eq!(app.kid_in_state("default", "current").await.unwrap(), next);
    assert_eq!(
        app.kid_in_state("default", "retired").await.unwrap(),
        current
    );
    assert_eq!(
        app.kids("default").await,
        [next, new_next, current],
        "current, next, then retired"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rotation_whose_next_key_was_published_long_enough_needs_no_force() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_unscheduled(dir.path(), EC_DEFAULT).await;
    let next = app.kid_in_state("default", "next").await.unwrap();
    // The scheduler's own rotation, at the moment the calendar says so (90 days on).
    let later = jwksd::unix_now() + 90 * 86_400 + 10;
    app.keyring.tick(later).await.unwrap();
    assert_eq!(app.kid_in_state("default", "current").await.unwrap(), next);
    assert!(app.kid_in_state("default", "retired").await.is_some());
    assert_eq!(app.kids("default").await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn the_old_kid_stays_published_through_retire_grace_then_leaves_but_its_record_stays() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_unscheduled(dir.path(), EC_DEFAULT).await;
    let old = app.kid_in_state("default", "current").await.unwrap();
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let keys = app.keys("default").await;
    let retired = keys.iter().find(|k| k["kid"] == old.as_str()).unwrap();
    assert_eq!(retired["state"], "retired");
    let remove_at = time::OffsetDateTime::parse(
        retired["remove_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let retired_at = time::OffsetDateTime::parse(
        retired["retired_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert_eq!(
        remove_at - retired_at,
        86_400,
        "retire_grace defaults to 24h"
    );

    app.keyring.tick(remove_at - 1).await.unwrap();
    assert!(
        app.kids("default").await.contains(&old),
        "still published one second before"
    );
    app.keyring.tick(remove_at).await.unwrap();
    assert!(
        !app.kids("default").await.contains(&old),
        "gone when the grace ends"
    );
    assert_eq!(app.kids("default").await.len(), 2);
    let record = app
        .keys("default")
        .await
        .into_iter()
        .find(|k| k["kid"] == old.as_str())
        .unwrap();
    assert_eq!(
        record["state"], "removed",
        "the record stays for the audit trail"
    );
    assert_problem(app.get_public(&format!("/certs/{old}.pem")).await, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn revoking_takes_a_key_out_at_once_and_revoking_current_promotes_next() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let current = app.kid_in_state("default", "current").await.unwrap();
    let next = app.kid_in_state("default", "next").await.unwrap();

    // Revoke the next key: it leaves at once and a new next key is published.
    let response = app.revoke(&next).await;
    assert_eq!(response.status(), 200);
    let outcome: jwksd::api::Revocation = response.json().await.unwrap();
    assert_eq!(outcome.revoked, next);
    assert!(outcome.promoted.is_none());
    let replacement = outcome.new_next.clone().unwrap();
    assert_eq!(
        app.kids("default").await,
        [current.clone(), replacement.clone()]
    );

    // Revoke the current key: the next key is promoted, forced, and the answer says so.
    let response = app.revoke(&current).await;
    assert_eq!(response.status(), 200);
    let outcome: jwksd::api::Revocation = response.json().await.unwrap();
    assert_eq!(outcome.promoted.as_deref(), Some(replacement.as_str()));
    assert!(
        outcome
            .warning
            .as_deref()
            .unwrap()
            .contains("published only"),
        "{outcome:?}"
    );
    let kids = app.kids("default").await;
    assert!(!kids.contains(&current) && !kids.contains(&next));
    assert_eq!(kids[0], replacement, "the promoted key is current");
    assert_eq!(
        app.kid_in_state("default", "current").await.unwrap(),
        replacement
    );

    let again = assert_problem(app.revoke(&current).await, 409).await;
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains("already revoked"),
        "{again}"
    );
    assert_problem(
        app.revoke("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await,
        404,
    )
    .await;
    let revoked = app
        .keys("default")
        .await
        .into_iter()
        .filter(|k| k["state"] == "revoked")
        .count();
    assert_eq!(revoked, 2);
    app.stop().await;
}

#[tokio::test]
async fn revoking_a_retired_key_removes_it_before_its_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let old = app.kid_in_state("default", "current").await.unwrap();
    assert_eq!(app.rotate("default", true).await.status(), 200);
    assert!(app.kids("default").await.contains(&old));
    assert_eq!(app.revoke(&old).await.status(), 200);
    assert!(!app.kids("default").await.contains(&old));
    assert_eq!(
        app.kids("default").await.len(),
        2,
        "current and next are untouched"
    );
    app.stop().await;
}

#[tokio::test]
async fn keys_and_their_lifecycle_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        "[keysets.default]\nalg = \"ES256\"\n[keysets.ec]\nalg = \"ES384\"\n",
    )
    .await;
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let ec_next = app.kid_in_state("ec", "next").await.unwrap();
    assert_eq!(app.revoke(&ec_next).await.status(), 200);
    let jwks_default = app.jwks("default").await;
    let jwks_ec = app.jwks("ec").await;
    let keys_default = app.keys("default").await;
    let etag = app.get_public("/.well-known/jwks.json").await.headers()["etag"].clone();
    app.stop().await;

    let app = spawn_app_with(
        dir.path(),
        "[keysets.default]\nalg = \"ES256\"\n[keysets.ec]\nalg = \"ES384\"\n",
    )
    .await;
    assert_eq!(app.jwks("default").await, jwks_default);
    assert_eq!(app.jwks("ec").await, jwks_ec);
    assert_eq!(app.keys("default").await, keys_default);
    assert_eq!(
        app.get_public("/.well-known/jwks.json").await.headers()["etag"],
        etag
    );
    app.stop().await;
}
