//! `POST /v1/tokens`: access tokens for authenticated callers, from the token service's
//! cache while fresh.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::CallerAuth;
use super::body::parse_json_body;
use super::problem::Problem;
use super::state::{Metrics, State};
use crate::api::TokenRequest;
use crate::tokens::{resolve_scope, TokenContext};

/// Largest token request body; a real one is under 200 bytes.
const BODY_LIMIT: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/tokens")
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .post(create_token),
    );
}

async fn create_token(
    CallerAuth(caller): CallerAuth,
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let request: TokenRequest = parse_json_body(&req, &body)?;
    let access = state.access();
    // Which caller may use which client is the signing service's rule.
    let client = state
        .signing
        .client_for(&caller, &access, &request.client_id)?;
    let scope = resolve_scope(client, request.scope)?;
    let ctx = TokenContext {
        signing: &state.signing,
        caller: &caller.name,
    };
    let answer = match state.tokens.token(&ctx, client, &scope).await {
        Ok(answer) => answer,
        Err(e) => {
            Metrics::bump(&state.metrics.token_failures);
            // A cached token is never an error: the cache could not answer this one.
            state.metrics.token_cache_misses.inc([&client.name]);
            return Err(e.into());
        }
    };
    if answer.from_cache {
        state.metrics.token_cache_hits.inc([&client.name]);
    } else {
        state.metrics.token_cache_misses.inc([&client.name]);
    }
    Metrics::bump(if answer.from_cache {
        &state.metrics.tokens_from_cache
    } else {
        &state.metrics.tokens_fetched
    });
    let cache = if answer.from_cache { "hit" } else { "miss" };
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Jwksd-Cache", cache));
    Ok(response.json(answer.body))
}
