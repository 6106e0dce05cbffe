//! The public listener's own routes: JWKS documents and certificates (`app` mounts
//! [`super::health`] beside them). Nothing here needs or accepts credentials, and nothing
//! here can change state.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};

use super::problem::Problem;
use super::state::{Metrics, State};
use crate::config::{is_valid_keyset_name, DEFAULT_KEYSET};
use crate::keyring::PublishedJwks;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/.well-known/jwks.json")
            .route(web::get().to(well_known_jwks))
            .route(web::head().to(well_known_jwks))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
    )
    .service(
        web::resource("/jwks/{file}")
            .route(web::get().to(keyset_jwks))
            .route(web::head().to(keyset_jwks))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
    )
    .service(
        web::resource("/certs/{file}")
            .route(web::get().to(certificate))
            .route(web::head().to(certificate)),
    );
}

/// CORS preflight (a browser-based tool fetching the JWKS): allow GET and HEAD from anywhere.
async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "If-None-Match"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

async fn well_known_jwks(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Problem> {
    serve_jwks(&req, &state, DEFAULT_KEYSET)
}

async fn keyset_jwks(
    req: HttpRequest,
    state: web::Data<State>,
    file: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let name = file
        .strip_suffix(".json")
        .filter(|name| is_valid_keyset_name(name))
        .ok_or_else(|| {
            Problem::not_found("no such key set; JWKS URLs look like /jwks/<keyset>.json")
        })?;
    serve_jwks(&req, &state, name)
}

fn serve_jwks(req: &HttpRequest, state: &State, keyset: &str) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let view = snapshot
        .keysets
        .get(keyset)
        .ok_or_else(|| Problem::not_found(format!("no key set named {keyset:?} is configured")))?;
    let jwks: Arc<PublishedJwks> = view.jwks.clone();
    let now = crate::unix_now();
    let max_age = jwks.max_age(now);
    let cache_control = format!("public, max-age={max_age}");
    // A GET answered 200 or 304 leaves the fetcher holding this document's kids (a 304
    // because its copy is this one); a HEAD holds nothing. Recorded in memory only.
    if req.method() == actix_web::http::Method::GET {
        record_fetch(req, state, keyset, &jwks, now);
    }
    if if_none_match(req.headers(), &jwks.etag) {
        Metrics::bump(&state.metrics.jwks_not_modified);
        state.metrics.jwks_requests.inc([keyset, "304"]);
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, jwks.etag.as_str()))
            .insert_header((header::CACHE_CONTROL, cache_control))
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .finish());
    }
    Metrics::bump(&state.metrics.jwks_served);
    state.metrics.jwks_requests.inc([keyset, "200"]);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::ETAG, jwks.etag.as_str()))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    // actix sends the headers of a GET, with its Content-Length, and no body for HEAD.
    Ok(response.body(jwks.body.clone()))
}

/// Notes who was served `jwks` (see [`crate::fetchers`]): the user agent and the source
/// address, through `X-Forwarded-For` only from a trusted proxy.
fn record_fetch(req: &HttpRequest, state: &State, keyset: &str, jwks: &PublishedJwks, now: i64) {
    let Some(peer) = req.peer_addr() else {
        return;
    };
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let source = crate::fetchers::source_address(peer.ip(), &forwarded, &state.trusted_proxies);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    state
        .fetchers
        .record(keyset, user_agent, source, &jwks.kids, now);
}

/// RFC 9110 §13.1.2: `*` or any listed tag matching by weak comparison.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

async fn certificate(
    state: web::Data<State>,
    file: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let not_found = || {
        Problem::not_found(
            "no published key has that kid; certificate URLs look like /certs/<kid>.pem",
        )
    };
    let kid = file.strip_suffix(".pem").ok_or_else(not_found)?;
    // kids are base64url RFC 7638 thumbprints: 43 characters.
    if kid.len() > 64
        || !kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(not_found());
    }
    let pem = state
        .keyring
        .snapshot()
        .cert_pem(kid)
        .ok_or_else(not_found)?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, "application/pem-certificate-chain"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    Ok(response.body(pem.as_bytes().to_vec()))
}
