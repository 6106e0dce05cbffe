//! `POST /v1/assertions`: signed client assertions for authenticated callers.
//!
//! Order of checks: caller token (401), rate (429), media type and size (415, 413), JSON
//! syntax (400), request shape (422), then the signing service's rules: lifetime (422),
//! client (404), permission (403), audience (403), usable key (503). Only then is an
//! assertion signed, and it is returned only after its audit record is durable; a refused
//! request creates neither.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::CallerAuth;
use super::body::parse_json_body;
use super::problem::Problem;
use super::state::{Metrics, State};
use crate::api::{AssertionRequest, AssertionResponse};
use crate::assertion::CLIENT_ASSERTION_TYPE;

/// Largest assertion request body; a real one is under 200 bytes.
const BODY_LIMIT: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/assertions")
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .post(create_assertion),
    );
}

async fn create_assertion(
    CallerAuth(caller): CallerAuth,
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let request: AssertionRequest = parse_json_body(&req, &body)?;
    let access = state.access();
    let signed = state
        .signing
        .for_caller(
            &caller,
            &access,
            &request,
            state.tokens.as_ref(),
            crate::unix_now(),
        )
        .await?;
    Metrics::bump(&state.metrics.assertions_issued);
    let expires_at = crate::rfc3339(signed.expires_at);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(AssertionResponse {
            client_assertion: signed.jwt,
            client_assertion_type: CLIENT_ASSERTION_TYPE.to_owned(),
            kid: signed.kid,
            alg: signed.alg.to_owned(),
            jti: signed.jti,
            expires_at,
        }))
}
