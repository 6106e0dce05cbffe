//! `GET /metrics` on the private listener: Prometheus text format (exposition format
//! 0.0.4), written with [`crate::metrics::Exposition`].
//!
//! Counters come from what the handlers, the request middleware, the token service, the
//! audit writer and the store wrapper bumped (`State::metrics`, `TokenService`); the key
//! gauges are read from the keyring's snapshot, and the TLS certificates' expiry from the
//! listeners (`State::tls`), at scrape time. Names follow Prometheus'
//! conventions: base units (`_seconds`), `_total` on counters, and labels, not names, for
//! dimensions. Every label value comes from the configuration, the keyring or the problem
//! table, never from a request, so the number of series stays bounded. The names of the
//! first version (`jwksd_jwks_served_total`, `jwksd_keys`, ...) are kept as they were.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, HttpResponse};

use super::state::State;
use crate::metrics::{Exposition, Kind};
use crate::rotation::KeyState;
use crate::store::metered::OPERATIONS;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").get(metrics));
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    let mut out = Exposition::default();
    request_counters(&mut out, &state);
    key_gauges(&mut out, &state, crate::unix_now());
    storage_metrics(&mut out, &state);
    tls_gauges(&mut out, &state);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out.finish())
}

/// Counters of what was asked and answered.
fn request_counters(out: &mut Exposition, state: &State) {
    let m = &state.metrics;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let mut counter = |name: &str, help: &str, value: f64| {
        out.family(name, Kind::Counter, help)
            .sample(name, &[], value);
    };
    counter(
        "jwksd_jwks_served_total",
        "JWKS documents served with a body.",
        load(&m.jwks_served),
    );
    counter(
        "jwksd_jwks_not_modified_total",
        "JWKS requests answered 304.",
        load(&m.jwks_not_modified),
    );
    counter(
        "jwksd_assertions_issued_total",
        "Client assertions returned by POST /v1/assertions (assertions signed for token requests count in jwksd_upstream_token_requests_total).",
        load(&m.assertions_issued),
    );
    counter(
        "jwksd_tokens_from_cache_total",
        "Access tokens served from the cache.",
        load(&m.tokens_from_cache),
    );
    counter(
        "jwksd_tokens_fetched_total",
        "Access tokens obtained from a token endpoint.",
        load(&m.tokens_fetched),
    );
    counter(
        "jwksd_token_failures_total",
        "Token requests that failed.",
        load(&m.token_failures),
    );
    counter(
        "jwksd_upstream_token_requests_total",
        "Token requests sent to token endpoints, retries included.",
        state.tokens.upstream_requests() as f64,
    );
    counter(
        "jwksd_http_protocol_errors_total",
        "Malformed requests answered by the HTTP parser itself (400/431, empty body), on either listener.",
        crate::logging::protocol_errors_total() as f64,
    );
    out.counter_vec(
        "jwksd_jwks_requests_total",
        "JWKS requests answered, by key set and status (200 with a body, 304 not modified).",
        ["keyset", "status"],
        &m.jwks_requests,
    );
    out.counter_vec(
        "jwksd_assertions_signed_total",
        "Client assertions signed and recorded in the audit trail (for callers and for token requests), by EHR client_id and signing kid.",
        ["client_id", "kid"],
        &m.audit.assertions,
    );
    out.counter_vec(
        "jwksd_requests_refused_total",
        "Requests answered with a problem (application/problem+json) on either listener, by reason: the problem type's slug.",
        ["reason"],
        &m.refused,
    );
    out.counter_vec(
        "jwksd_token_requests_upstream_total",
        "Token requests sent to token endpoints (retries included), by client and outcome: issued, bad_answer, rate_limited, server_error, refused, unreachable.",
        ["client", "outcome"],
        state.tokens.upstream_outcomes(),
    );
    out.counter_vec(
        "jwksd_token_cache_hits_total",
        "POST /v1/tokens requests answered from the token cache, by client.",
        ["client"],
        &m.token_cache_hits,
    );
    out.counter_vec(
        "jwksd_token_cache_misses_total",
        "POST /v1/tokens requests the token cache could not answer (fetched, or failed), by client.",
        ["client"],
        &m.token_cache_misses,
    );
}

/// Gauges of the keys as the snapshot holds them, at `now`.
fn key_gauges(out: &mut Exposition, state: &State, now: i64) {
    let snapshot = state.keyring.snapshot();
    out.family("jwksd_keys", Kind::Gauge, "Keys by key set and state.");
    for (name, view) in &snapshot.keysets {
        for key_state in ["next", "current", "retired", "removed", "revoked"] {
            let count = view
                .records
                .iter()
                .filter(|r| r.state.as_str() == key_state)
                .count();
            out.sample(
                "jwksd_keys",
                &[("keyset", name), ("state", key_state)],
                count as f64,
            );
        }
    }
    out.family(
        "jwksd_key_age_seconds",
        Kind::Gauge,
        "Seconds since each published key (next, current, retired) was created, by key set, kid and state.",
    );
    for (name, view) in &snapshot.keysets {
        for key in view.records.iter().filter(|r| r.state.is_published()) {
            out.sample(
                "jwksd_key_age_seconds",
                &[
                    ("keyset", name),
                    ("kid", &key.kid),
                    ("state", key.state.as_str()),
                ],
                (now - key.created_at) as f64,
            );
        }
    }
    out.family(
        "jwksd_current_key_signing_seconds",
        Kind::Gauge,
        "Seconds since the current key of each key set started signing.",
    );
    for (name, view) in &snapshot.keysets {
        let current = view.records.iter().filter(|r| r.state == KeyState::Current);
        for key in current {
            let since = key.activated_at.unwrap_or(key.created_at);
            out.sample(
                "jwksd_current_key_signing_seconds",
                &[("keyset", name), ("kid", &key.kid)],
                (now - since) as f64,
            );
        }
    }
    out.family(
        "jwksd_next_key_published_seconds",
        Kind::Gauge,
        "Seconds since the next key of each key set was published (absent while a key set has no next key).",
    );
    for (name, view) in &snapshot.keysets {
        let next = view
            .records
            .iter()
            .filter(|r| r.state == KeyState::Next)
            .max_by_key(|r| r.published_at);
        if let Some(key) = next {
            out.sample(
                "jwksd_next_key_published_seconds",
                &[("keyset", name)],
                (now - key.published_at) as f64,
            );
        }
    }
    out.family(
        "jwksd_keyset_next_change_seconds",
        Kind::Gauge,
        "Seconds until each key set next changes by itself (a scheduled rotation or removal); negative when overdue, absent when nothing is scheduled.",
    );
    for (name, view) in &snapshot.keysets {
        if let Some(at) = view.jwks.next_change_at {
            out.sample(
                "jwksd_keyset_next_change_seconds",
                &[("keyset", name)],
                (at - now) as f64,
            );
        }
    }
    out.family(
        "jwksd_keyset_rotation_period_seconds",
        Kind::Gauge,
        "Each key set's configured rotation_period (absent when rotation is off).",
    );
    for (name, view) in &snapshot.keysets {
        if let Some(period) = view.config.timing.rotation_period {
            out.sample(
                "jwksd_keyset_rotation_period_seconds",
                &[("keyset", name)],
                period as f64,
            );
        }
    }
}

/// The audit writer's latency and the store's errors.
fn storage_metrics(out: &mut Exposition, state: &State) {
    let m = &state.metrics;
    out.histogram(
        "jwksd_audit_write_duration_seconds",
        "Seconds each batch of audit records (assertions issued) took to commit, failed batches included.",
        &m.audit.write_latency,
    );
    out.family(
        "jwksd_store_errors_total",
        Kind::Counter,
        "Errors of the key store by operation (a concurrent change refused is not one).",
    );
    // Every operation is written, at 0 until it fails, so `increase()` sees the first error.
    for operation in OPERATIONS {
        out.sample(
            "jwksd_store_errors_total",
            &[("operation", operation)],
            m.store_errors.get([operation]) as f64,
        );
    }
}

/// When each HTTPS listener's certificate expires, as it is served now (reloads included).
fn tls_gauges(out: &mut Exposition, state: &State) {
    out.family(
        "jwksd_tls_certificate_expiry_timestamp_seconds",
        Kind::Gauge,
        "The notAfter (Unix seconds) of the TLS certificate each listener serves, by listener (public, private); absent for a listener on plain HTTP.",
    );
    for listener in &state.tls {
        if let Some(not_after) = listener.not_after() {
            out.sample(
                "jwksd_tls_certificate_expiry_timestamp_seconds",
                &[("listener", listener.files().listener)],
                not_after as f64,
            );
        }
    }
}
