//! `GET /metrics` on the private listener: Prometheus text format (exposition format
//! 0.0.4): the counters the handlers bump (`State::metrics`), key counts read from the
//! snapshot at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, HttpResponse};

use super::state::State;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").get(metrics));
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
        state.tokens.upstream_requests(),
    );
    counter(
        "jwksd_http_protocol_errors_total",
        "Malformed requests answered by the HTTP parser itself (400/431, empty body), on either listener.",
        crate::logging::protocol_errors_total(),
    );
    let _ = writeln!(
        out,
        "# HELP jwksd_keys Keys by key set and state.\n# TYPE jwksd_keys gauge"
    );
    let snapshot = state.keyring.snapshot();
    for (name, view) in &snapshot.keysets {
        for key_state in ["next", "current", "retired", "removed", "revoked"] {
            let count = view
                .records
                .iter()
                .filter(|r| r.state.as_str() == key_state)
                .count();
            let _ = writeln!(
                out,
                "jwksd_keys{{keyset=\"{name}\",state=\"{key_state}\"}} {count}"
            );
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
