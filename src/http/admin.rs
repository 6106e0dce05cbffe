//! The admin API on the private listener: list key sets and keys, rotate, revoke.
//!
//! Every handler takes an [`AdminAuth`], so an unauthenticated request never reaches one.
//! Mutations answer only after the store has committed (SQLite `synchronous=FULL`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::auth::AdminAuth;
use super::problem::Problem;
use super::State;
use crate::config::is_valid_keyset_name;
use crate::keyring::{KeysetView, Snapshot};
use crate::rotation::{KeyRecord, KeyState, UnixTime};

/// Largest body the admin API reads (its bodies are a few optional flags).
const BODY_LIMIT: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .service(web::resource("/keysets").get(list_keysets))
            .service(web::resource("/keysets/{keyset}/keys").get(list_keys))
            .service(web::resource("/keysets/{keyset}/rotate").post(rotate))
            .service(web::resource("/keys/{kid}/revoke").post(revoke))
            .service(web::resource("/keysets/{keyset}/jwks").get(keyset_jwks))
            .service(web::resource("/clients").get(list_clients))
            .service(web::resource("/audit").get(audit))
            .service(
                web::resource("/clients/{client}/token-check").post(super::tokens::token_check),
            ),
    );
}

fn rfc3339(t: Option<UnixTime>) -> Option<String> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// A key as the admin API shows it.
#[derive(Serialize)]
struct KeyView {
    kid: String,
    keyset: String,
    alg: &'static str,
    state: &'static str,
    created_at: Option<String>,
    published_at: Option<String>,
    activated_at: Option<String>,
    retired_at: Option<String>,
    remove_at: Option<String>,
    revoked_at: Option<String>,
    /// Path of the certificate on the public listener, while the key is published.
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_url: Option<String>,
}

impl KeyView {
    fn new(r: &KeyRecord, public_base: &str) -> Self {
        KeyView {
            kid: r.kid.clone(),
            keyset: r.keyset.clone(),
            alg: r.alg.as_str(),
            state: r.state.as_str(),
            created_at: rfc3339(Some(r.created_at)),
            published_at: rfc3339(Some(r.published_at)),
            activated_at: rfc3339(r.activated_at),
            retired_at: rfc3339(r.retired_at),
            remove_at: rfc3339(r.remove_at),
            revoked_at: rfc3339(r.revoked_at),
            certificate_url: r
                .state
                .is_published()
                .then(|| format!("{public_base}/certs/{}.pem", r.kid)),
        }
    }
}

fn valid_keyset(name: &str) -> Result<&str, Problem> {
    if is_valid_keyset_name(name) {
        Ok(name)
    } else {
        Err(Problem::not_found("no key set by that name is configured"))
    }
}

/// The served key set `name`: 404 for a name that is not one.
fn keyset_view<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a KeysetView, Problem> {
    let name = valid_keyset(name)?;
    snapshot
        .keysets
        .get(name)
        .ok_or_else(|| Problem::from(crate::error::Error::UnknownKeyset(name.to_owned())))
}

async fn list_keysets(_: AdminAuth, state: web::Data<State>) -> HttpResponse {
    let snapshot = state.keyring.snapshot();
    let base = state.public_base();
    let keysets: Vec<_> = snapshot
        .keysets
        .values()
        .map(|view| {
            let c = &view.config;
            let of_state = |s: KeyState| {
                view.records
                    .iter()
                    .filter(|r| r.state == s)
                    .map(|r| r.kid.clone())
                    .next_back()
            };
            serde_json::json!({
                "name": c.name,
                "alg": c.alg.as_str(),
                "rsa_bits": matches!(c.alg.family(), crate::keys::KeyFamily::Rsa).then(|| c.rsa_bits.bits()),
                "rotation_period_seconds": c.timing.rotation_period,
                "jwks_max_age_seconds": c.timing.jwks_max_age,
                "prepublish_seconds": c.timing.prepublish,
                "retire_grace_seconds": c.timing.retire_grace,
                "cert_subject": c.cert_subject,
                "jwks_url": format!("{base}/jwks/{}.json", c.name),
                "current_kid": of_state(KeyState::Current),
                "next_kid": of_state(KeyState::Next),
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "keysets": keysets }))
}

async fn list_keys(
    _: AdminAuth,
    state: web::Data<State>,
    keyset: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let view = keyset_view(&snapshot, &keyset)?;
    let base = state.public_base();
    let keys: Vec<_> = view
        .records
        .iter()
        .rev()
        .map(|r| KeyView::new(r, &base))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateQuery {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// Why; recorded in the audit trail (first 500 characters).
    #[serde(default)]
    reason: Option<String>,
}

/// Reads an optional JSON body: empty is fine, anything else is read like every JSON body
/// (415, 400, 422; see `signing::parse_json_body`).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if body.len() > BODY_LIMIT {
        return Err(Problem::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Payload Too Large",
            format!("admin request bodies are at most {BODY_LIMIT} bytes"),
        ));
    }
    super::signing::parse_json_body(req, body)
}

async fn rotate(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
    keyset: web::Path<String>,
    query: web::Query<RotateQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let name = valid_keyset(&keyset)?;
    let body: RotateBody = optional_json(&req, &body)?;
    let force = query.force || body.force;
    let keyring = state.keyring.clone();
    let name = name.to_owned();
    // In its own task: a client that hangs up must not cancel a change between its commit
    // and the new snapshot.
    let outcome =
        tokio::spawn(async move { keyring.rotate(&name, force, crate::unix_now()).await })
            .await
            .map_err(|e| crate::error::Error::Task(e.to_string()))??;
    Ok(HttpResponse::Ok().json(outcome))
}

async fn revoke(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
    kid: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let body: RevokeBody = optional_json(&req, &body)?;
    if kid.len() > 64 {
        return Err(Problem::from(crate::error::Error::UnknownKid(
            "(too long)".into(),
        )));
    }
    let reason: Option<String> = body.reason.map(|r| r.chars().take(500).collect());
    let keyring = state.keyring.clone();
    let kid = kid.into_inner();
    // In its own task, as rotation is.
    let outcome = tokio::spawn(async move {
        keyring
            .revoke(&kid, reason.as_deref(), crate::unix_now())
            .await
    })
    .await
    .map_err(|e| crate::error::Error::Task(e.to_string()))??;
    Ok(HttpResponse::Ok().json(outcome))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<String>,
    client: Option<String>,
    caller: Option<String>,
    kid: Option<String>,
    event: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Most records one page returns.
const AUDIT_PAGE_MAX: u32 = 1000;

async fn audit(
    _: AdminAuth,
    state: web::Data<State>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, Problem> {
    let query = query.into_inner();
    let since = match &query.since {
        None => None,
        Some(text) => Some(
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| {
                    Problem::bad_request(
                        "since must be an RFC 3339 time, like 2026-11-28T00:00:00Z",
                    )
                })?
                .unix_timestamp(),
        ),
    };
    let after = match &query.cursor {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| {
                Problem::bad_request("cursor must be the next_cursor of a previous page")
            })?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=AUDIT_PAGE_MAX).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {AUDIT_PAGE_MAX}"
        )));
    }
    // `client` may name a client by section name or by its client_id.
    let client_id = query.client.map(|c| {
        state
            .access()
            .client(&c)
            .map_or(c, |client| client.client_id.clone())
    });
    let filter = crate::audit::AuditFilter {
        since,
        client_id,
        caller: query.caller,
        kid: query.kid,
        event: query.event,
    };
    let records = state
        .keyring
        .store()
        .audit_page(&filter, after, limit)
        .await
        .map_err(|e| Problem::from(crate::error::Error::Store(e)))?;
    let next_cursor = (records.len() as u32 == limit)
        .then(|| records.last().map(|r| r.seq.to_string()))
        .flatten();
    let records: Vec<_> = records
        .iter()
        .map(|r| {
            let e = &r.event;
            serde_json::json!({
                "seq": r.seq,
                "time": rfc3339(Some(e.time)),
                "event": e.event,
                "caller": e.caller,
                "client_id": e.client_id,
                "keyset": e.keyset,
                "kid": e.kid,
                "jti": e.jti,
                "audience": e.audience,
                "expires_at": rfc3339(e.expires_at),
                "detail": e.detail.as_deref().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
                "hash": r.hash,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "records": records, "next_cursor": next_cursor })))
}

/// The key set's JWKS as published, for tools that run beside jwksd (`jwksd register`).
async fn keyset_jwks(
    _: AdminAuth,
    state: web::Data<State>,
    keyset: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let view = keyset_view(&snapshot, &keyset)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(view.jwks.body.clone()))
}

/// The configured clients (no secrets), with the JWKS URL of each one's key set.
async fn list_clients(_: AdminAuth, state: web::Data<State>) -> HttpResponse {
    let access = state.access();
    let base = state.public_base();
    let clients: Vec<_> = access
        .clients
        .values()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "client_id": c.client_id,
                "keyset": c.keyset,
                "token_endpoint": c.token_endpoint,
                "audiences": c.audiences,
                "fhir_base_url": c.fhir_base_url,
                "scope": c.scope,
                "assertion_lifetime_seconds": c.assertion_lifetime,
                "jwks_url": format!("{base}/jwks/{}.json", c.keyset),
            })
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "clients": clients }))
}
