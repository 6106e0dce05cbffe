//! Every request's id and its one log line, on both listeners: the outermost middleware
//! ([`log_request`]).
//!
//! Each request gets an id: the caller's own `X-Request-Id` when it is well formed (1 to 64
//! of letters, digits, `-`, `_`, `.`, `:`; what a reverse proxy or a calling service sets,
//! so one id follows a request across them), else a fresh random one. It is returned in
//! the `X-Request-Id` response header, carried by every log line written while the request
//! runs (a span), and put into problem bodies as `request_id` (the problem module reads it
//! with [`current_request_id`]).
//!
//! The request line holds the method, the path (never the query), the status, the duration,
//! the id and, once authenticated, the caller's name ([`Authenticated`], set by `auth`):
//! never a header, so never the `Authorization` token, and never a body. Problem answers
//! are also counted by their kind ([`Refusal`], set by `problem`). Health probes are
//! logged at DEBUG: a container probe every few seconds would bury everything else.
//!
//! Below `problem` and `auth` (they import it); it imports only `state`.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use super::state::State;
use crate::logging::HumanDuration;

/// The request id header, in requests and answers.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest incoming request id taken as it is.
const MAX_INCOMING_ID: usize = 64;
/// Longest path written to the log (actix already bounds the URL).
const MAX_LOGGED_PATH: usize = 256;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being answered on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Put into a response's extensions by `problem`: the slug of the problem kind that
/// answered, for `jwksd_requests_refused_total`.
#[derive(Clone, Copy, Debug)]
pub struct Refusal(pub &'static str);

/// Put into a request's extensions by `auth`: who the request authenticated as (a
/// caller's configured name, or `admin`), for the request line.
#[derive(Clone, Debug)]
pub struct Authenticated(pub String);

/// The caller's `X-Request-Id`, when it is one jwksd can log and echo safely.
fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let well_formed = (1..=MAX_INCOMING_ID).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    well_formed.then(|| value.to_owned())
}

/// A fresh id: 64 random bits as 16 hex digits.
fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // A failing system RNG leaves zeros: the id is a search key, never a secret.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The middleware: id, span, answer, header, counters, one log line. An error from an
/// inner layer is turned into its response here, inside the request's scope, so that its
/// problem body carries the id; it is handed on as an error that answers with exactly
/// that response (actix does not let a middleware keep the request for a response of its
/// own before routing has run).
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = incoming_id(&req).unwrap_or_else(new_id);
    let method = req.method().clone();
    let path: String = req.path().chars().take(MAX_LOGGED_PATH).collect();
    let state = req.app_data::<web::Data<State>>().cloned();
    let span = tracing::info_span!("request", request_id = %id);
    let answered = REQUEST_ID
        .scope(
            id.clone(),
            async move {
                match next.call(req).await {
                    Ok(response) => Ok(response.map_into_boxed_body()),
                    Err(err) => Err(err.error_response()),
                }
            }
            .instrument(span),
        )
        .await;
    let header = HeaderValue::from_str(&id).ok();
    let (status, refusal, caller) = match &answered {
        Ok(response) => (
            response.status(),
            response.response().extensions().get::<Refusal>().copied(),
            response
                .request()
                .extensions()
                .get::<Authenticated>()
                .map(|a| a.0.clone()),
        ),
        Err(response) => (
            response.status(),
            response.extensions().get::<Refusal>().copied(),
            None,
        ),
    };
    if let (Some(Refusal(reason)), Some(state)) = (refusal, &state) {
        state.metrics.refused.inc([reason]);
    }
    let status = status.as_u16();
    let duration = HumanDuration(started.elapsed());
    let probe = matches!(path.as_str(), "/healthz" | "/readyz");
    match (caller, probe) {
        (_, true) => {
            tracing::debug!(target: "jwksd::request", method = %method, path, status, %duration, request_id = %id, "request");
        }
        (Some(caller), false) => {
            tracing::info!(target: "jwksd::request", method = %method, path, status, %duration, request_id = %id, caller, "request");
        }
        (None, false) => {
            tracing::info!(target: "jwksd::request", method = %method, path, status, %duration, request_id = %id, "request");
        }
    }
    let name = HeaderName::from_static(REQUEST_ID_HEADER);
    match answered {
        Ok(mut response) => {
            if let Some(value) = header {
                response.headers_mut().insert(name, value);
            }
            Ok(response)
        }
        Err(mut response) => {
            if let Some(value) = header {
                response.headers_mut().insert(name, value);
            }
            Err(InternalError::from_response("answered by a middleware", response).into())
        }
    }
}
