//! `POST /v1/tokens` for callers, and the admin's uncached token check behind
//! `jwksd doctor` (routed in the admin scope, `POST /admin/v1/clients/{client}/token-check`).

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{AdminAuth, CallerAuth};
use super::metrics::Metrics;
use super::problem::Problem;
use super::signing::{parse_json_body, permitted_client};
use super::State;
use crate::tokens::{TokenContext, TokenError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/tokens")
            .app_data(web::PayloadConfig::new(4096))
            .post(create_token),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    client_id: String,
    #[serde(default)]
    scope: Option<String>,
}

/// Maps a failed token request to a problem that carries the upstream error and jwksd's
/// diagnosis.
pub fn token_problem(err: TokenError) -> Problem {
    match err {
        TokenError::Discovery(e) if e.is_bad_answer() => {
            // The discovery document answered with something unusable: say what and why
            // (its values are bounded by the discovery module), no assertion was signed.
            tracing::warn!(error = %e, "SMART discovery answer refused");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "discovery-refused",
                "SMART Discovery Answer Refused",
                format!("{e}; no assertion was signed or sent"),
            )
        }
        TokenError::Discovery(e) => {
            tracing::error!(error = %e, "SMART discovery failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "discovery-failed",
                "SMART Discovery Failed",
                "the token endpoint could not be discovered from the client's fhir_base_url; the server log has the cause",
            )
            .with_retry_after(30)
        }
        TokenError::NoKey(keyset) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-current-key",
            "No Usable Key",
            format!("key set {keyset} has no usable key yet"),
        )
        .with_retry_after(5),
        TokenError::Audit => Problem::storage_unavailable(
            "the audit trail is unavailable, so no assertion was sent; retry",
        ),
        TokenError::Upstream {
            class,
            status,
            error,
            error_description,
            error_uri,
            retry_after,
            diagnosis,
        } => {
            let http_status = if status.is_none() {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            let mut members = serde_json::Map::new();
            members.insert(
                "classification".into(),
                serde_json::to_value(class).unwrap_or_default(),
            );
            members.insert("fix".into(), class.fix().into());
            members.insert("upstream_status".into(), status.into());
            members.insert("error".into(), error.into());
            members.insert("error_description".into(), error_description.into());
            members.insert("error_uri".into(), error_uri.into());
            members.insert(
                "diagnosis".into(),
                serde_json::to_value(&*diagnosis).unwrap_or_default(),
            );
            let mut problem = Problem::new(
                http_status,
                "upstream-refused",
                "Token Request Failed",
                format!("the token endpoint refused: {}", class.explanation()),
            )
            .with_extensions(members);
            if let Some(seconds) = retry_after {
                problem = problem.with_retry_after(seconds as i64);
            }
            problem
        }
    }
}

async fn create_token(
    CallerAuth(caller): CallerAuth,
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let request: TokenRequest = parse_json_body(&req, &body)?;
    let access = state.access();
    let client = permitted_client(&access, &caller, &request.client_id)?;
    let scope = request
        .scope
        .or_else(|| client.scope.clone())
        .unwrap_or_default();
    // A caller may narrow the client's scopes, never widen them (the cache is shared by
    // every caller of the client).
    if let Some(granted) = &client.scope {
        let granted: Vec<&str> = granted.split_whitespace().collect();
        if let Some(extra) = scope.split_whitespace().find(|s| !granted.contains(s)) {
            return Err(super::signing::forbidden(format!(
                "scope {extra:?} is not among client {}'s configured scopes",
                client.name
            )));
        }
    } else {
        // Nothing configured to narrow: the caller's scope must still be a few system/
        // scopes (it is sent to the EHR and is part of the token cache key).
        crate::tokens::check_caller_scope(&scope).map_err(|detail| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-scope",
                "Invalid Scope",
                detail,
            )
        })?;
    }
    let ctx = TokenContext {
        keyring: &state.keyring,
        audit: &state.audit,
        caller: &caller.name,
    };
    let answer = match state.tokens.token(&ctx, client, &scope).await {
        Ok(answer) => answer,
        Err(e) => {
            Metrics::bump(&state.metrics.token_failures);
            return Err(token_problem(e));
        }
    };
    Metrics::bump(if answer.from_cache {
        &state.metrics.tokens_from_cache
    } else {
        &state.metrics.tokens_fetched
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            "X-Jwksd-Cache",
            if answer.from_cache { "hit" } else { "miss" },
        ))
        .json(answer.body))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    #[serde(default)]
    scope: Option<String>,
}

/// A real, uncached token request whose token is not returned: only whether it worked,
/// and if not, the classified failure.
pub async fn token_check(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
    client: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let request: CheckRequest = super::admin::optional_json(&req, &body)?;
    let access = state.access();
    let client = access
        .client(&client)
        .ok_or_else(|| Problem::not_found("no client by that name is configured"))?;
    let scope = request
        .scope
        .or_else(|| client.scope.clone())
        .unwrap_or_default();
    let ctx = TokenContext {
        keyring: &state.keyring,
        audit: &state.audit,
        caller: "admin",
    };
    let answer = match state.tokens.fresh_token(&ctx, client, &scope).await {
        Ok(answer) => serde_json::json!({
            "ok": true,
            "token_type": answer.body.get("token_type"),
            "expires_in": answer.body.get("expires_in"),
            "scope": answer.body.get("scope"),
            "diagnosis": answer.diagnosis,
        }),
        Err(TokenError::Upstream {
            class,
            status,
            error,
            error_description,
            error_uri,
            diagnosis,
            ..
        }) => serde_json::json!({
            "ok": false,
            "classification": class,
            "explanation": class.explanation(),
            "fix": class.fix(),
            "upstream_status": status,
            "error": error,
            "error_description": error_description,
            "error_uri": error_uri,
            "diagnosis": diagnosis,
        }),
        Err(other) => return Err(token_problem(other)),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer))
}
