//! `POST /v1/assertions`: signed client assertions for authenticated callers.
//!
//! Order of checks: caller token (401), rate (429), media type and size (415, 413), JSON
//! syntax (400), request shape (422), client (404), permission (403), usable key (503).
//! Only then is an assertion signed, and it is returned only after its audit record is
//! durable; a refused request creates neither.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;

use super::auth::CallerAuth;
use super::problem::Problem;
use super::State;
use crate::assertion::{self, CLIENT_ASSERTION_TYPE};
use crate::config::{
    Access, CallerConfig, ClientConfig, MAX_ASSERTION_LIFETIME, MIN_ASSERTION_LIFETIME,
};

/// Largest assertion request body; a real one is under 200 bytes.
const BODY_LIMIT: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/assertions")
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .post(create_assertion),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionRequest {
    client_id: String,
    #[serde(default)]
    audience: Option<String>,
    /// Seconds until `exp`.
    #[serde(default)]
    lifetime: Option<i64>,
}

fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-request",
        "Unprocessable Request",
        detail,
    )
}

pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
}

fn unavailable(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Service Unavailable",
        detail,
    )
    .with_retry_after(5)
}

/// Reads a JSON request body: 415 unless `application/json`, 400 unless valid JSON, 422
/// unless an object of the expected shape (serde alone would also accept an array).
pub fn parse_json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, Problem> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported Media Type",
            "send the request body as application/json",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not valid JSON ({} at line {} column {})",
            match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "invalid data",
                serde_json::error::Category::Eof => "unexpected end",
            },
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(unprocessable("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| {
        let text: String = e
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        unprocessable(format!("the request is not of the expected shape: {text}"))
    })
}

/// The client `client_id` names, if `caller` may use it: 404 for an unknown client, 403
/// for one the caller is not allowed.
pub fn permitted_client<'a>(
    access: &'a Access,
    caller: &CallerConfig,
    client_id: &str,
) -> Result<&'a ClientConfig, Problem> {
    let client = access
        .client(client_id)
        .ok_or_else(|| Problem::not_found("no client with that client_id is configured"))?;
    if !caller.clients.contains(&client.name) {
        return Err(forbidden(format!(
            "caller {} may not use client {}",
            caller.name, client.name
        )));
    }
    Ok(client)
}

/// 429 for a caller over its rate.
pub fn rate_limited(caller: &CallerConfig, retry_after: u64) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too Many Requests",
        format!(
            "caller {} may make {} requests per minute",
            caller.name, caller.rate_limit_per_minute
        ),
    )
    .with_retry_after(retry_after as i64)
}

async fn create_assertion(
    CallerAuth(caller): CallerAuth,
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let request: AssertionRequest = parse_json_body(&req, &body)?;
    let lifetime = request.lifetime;
    if let Some(lifetime) = lifetime {
        if !(MIN_ASSERTION_LIFETIME..=MAX_ASSERTION_LIFETIME).contains(&lifetime) {
            return Err(unprocessable(format!(
                "lifetime must be between {MIN_ASSERTION_LIFETIME} and {MAX_ASSERTION_LIFETIME} seconds (SMART: exp at most 5 minutes ahead)"
            )));
        }
    }
    let access = state.access();
    let client = permitted_client(&access, &caller, &request.client_id)?;
    let default_audience = state
        .tokens
        .default_audience(client)
        .await
        .map_err(super::tokens::token_problem)?;
    let audience = match &request.audience {
        None => default_audience,
        Some(audience) if *audience == default_audience || client.audiences.contains(audience) => {
            audience.clone()
        }
        Some(_) => {
            return Err(forbidden(format!(
                "that audience is not one of client {}'s audiences",
                client.name
            )))
        }
    };
    let lifetime = lifetime.unwrap_or(client.assertion_lifetime);

    let snapshot = state.keyring.snapshot();
    let signer = snapshot
        .keysets
        .get(&client.keyset)
        .and_then(|view| view.signer.clone())
        .ok_or_else(|| unavailable(format!("key set {} has no usable key yet", client.keyset)))?;
    let now = crate::unix_now();
    let signed = assertion::sign(
        &signer,
        &client.client_id,
        &audience,
        assertion::new_jti(),
        now,
        lifetime,
    )
    .map_err(|e| {
        tracing::error!(error = %e, kid = %signer.kid, "signing failed");
        unavailable("signing failed; retry")
    })?;

    // Fail closed: the assertion leaves only once its record is durable.
    state
        .audit
        .append(assertion::issued_event(
            &caller.name,
            client,
            &signed,
            &audience,
            now,
            None,
        ))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "assertion withheld: audit unavailable");
            Problem::storage_unavailable(
                "the audit trail is unavailable, so no assertion was issued; retry",
            )
        })?;

    super::metrics::Metrics::bump(&state.metrics.assertions_issued);
    let expires_at = time::OffsetDateTime::from_unix_timestamp(signed.expires_at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok());
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "client_assertion": signed.jwt,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "kid": signed.kid,
            "alg": signed.alg,
            "jti": signed.jti,
            "expires_at": expires_at,
        })))
}
