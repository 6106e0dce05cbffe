//! Problem details (RFC 9457): the one shape every refusal takes, and the one mapping from
//! the domain error to HTTP.
//!
//! `detail` is written for the operator and never carries internal error text: store,
//! crypto and task failures are logged with their whole cause chain and answered with a
//! fixed sentence.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tracing::error;

use crate::error::Error;

/// Seconds a client waits before repeating a request refused for a storage failure.
pub const STORAGE_RETRY_AFTER: i64 = 5;

/// An RFC 9457 problem, ready to send.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Seconds to wait, also sent as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
    /// Extension members (RFC 9457 §3.2), e.g. the upstream error of a token request.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip)]
    challenge: bool,
}

impl Problem {
    /// `slug` names the problem type (`urn:jwksd:problem:<slug>`).
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("urn:jwksd:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            extensions: None,
            challenge: false,
        }
    }

    /// Adds extension members.
    pub fn with_extensions(mut self, members: serde_json::Map<String, serde_json::Value>) -> Self {
        self.extensions = Some(members);
        self
    }

    pub fn with_retry_after(mut self, seconds: i64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not Found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad Request",
            detail,
        )
    }

    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut problem = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        );
        problem.challenge = true;
        problem
    }

    /// The problem+json body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// 503 + `Retry-After`: the store cannot read or commit right now (a full disk, an I/O
    /// error). Nothing was changed; the same request can simply be repeated.
    pub fn storage_unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage-unavailable",
            "Storage Unavailable",
            detail,
        )
        .with_retry_after(STORAGE_RETRY_AFTER)
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
            "jwksd could not complete the request; the server log has the cause. Nothing was changed.",
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.challenge {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jwksd\""),
            ));
        }
        response.body(self.to_json())
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        match &err {
            Error::UnknownKeyset(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-keyset",
                "Unknown Key Set",
                err.to_string(),
            ),
            Error::UnknownKid(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-kid",
                "Unknown Key",
                err.to_string(),
            ),
            Error::RotationTooEarly { retry_after, .. } => Problem::new(
                StatusCode::CONFLICT,
                "rotation-too-early",
                "Next Key Not Published Long Enough",
                err.to_string(),
            )
            .with_retry_after(*retry_after),
            Error::NoNextKey(_) => Problem::new(
                StatusCode::CONFLICT,
                "no-next-key",
                "No Next Key",
                err.to_string(),
            )
            .with_retry_after(60),
            Error::NotRevocable { .. } => Problem::new(
                StatusCode::CONFLICT,
                "not-revocable",
                "Key Not Published",
                err.to_string(),
            ),
            Error::NoCurrentKey(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-current-key",
                "No Usable Key",
                err.to_string(),
            )
            .with_retry_after(30),
            Error::Store(crate::store::StoreError::Conflict(_)) => Problem::new(
                StatusCode::CONFLICT,
                "concurrent-change",
                "Concurrent Change",
                "the key set changed while this request was processed; nothing was changed, retry",
            ),
            Error::Store(store) if store.is_storage_failure() => {
                error!(error = %err, "request refused: storage unavailable");
                Problem::storage_unavailable(
                    "the key store cannot read or commit right now (the server log has the \
                     cause); nothing was changed, retry later",
                )
            }
            // The store failed an integrity check while running (rows edited behind jwksd's
            // back): changes are refused until the operator restores it; the keys in memory,
            // verified when they were loaded, keep serving.
            Error::Store(crate::store::StoreError::Tampered(_))
            | Error::Store(crate::store::StoreError::Corrupt(_))
            | Error::Store(crate::store::StoreError::Database(_))
            | Error::Integrity(_) => {
                error!(error = %err, "request refused: the store failed an integrity check");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-integrity",
                    "Store Integrity Check Failed",
                    "the key store holds data jwksd did not write (the server log names it); \
                     nothing was changed. Restore the store from a backup",
                )
                .with_retry_after(60)
            }
            Error::Store(_) | Error::Key(_) | Error::Cert(_) | Error::Task(_) => {
                error!(error = %err, "request failed");
                Problem::internal()
            }
        }
    }
}

/// Maps actix's extractor errors (bad JSON, bad query, oversized body) to problems.
pub fn from_extractor(err: actix_web::Error) -> actix_web::Error {
    let status = err.as_response_error().status_code();
    let problem = match status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => for_status(status),
        _ => Problem::bad_request(format!(
            "the request could not be read: {}",
            sanitize(&err.to_string())
        )),
    };
    problem.into()
}

/// The problem for an error status that no handler explained.
fn for_status(status: StatusCode) -> Problem {
    match status {
        StatusCode::NOT_FOUND => Problem::not_found("no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(
            status,
            "method-not-allowed",
            "Method Not Allowed",
            "this resource does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            status,
            "body-too-large",
            "Payload Too Large",
            "the request body is larger than this endpoint accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "unsupported-media-type",
            "Unsupported Media Type",
            "send the body as application/json",
        ),
        s if s.is_client_error() => Problem::bad_request("the request could not be read"),
        _ => Problem::internal(),
    }
}

/// Keeps an extractor message short and printable: it may quote the client's own input.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Middleware hook: any error response that is not already a problem (actix's own 404,
/// 405, 413 from a body limit, ...) is rewritten as one, so every refusal has one shape.
pub fn ensure_problem<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let already = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if already {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let problem = for_status(status);
    let allow = res.headers().get(header::ALLOW).cloned();
    let (req, _) = res.into_parts();
    let mut response = problem.error_response();
    response.head_mut().status = status;
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn storage_failures_are_503_with_retry_after_and_bad_data_is_not() {
        for err in [
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable("disk full".into()),
        ] {
            let problem = Problem::from(Error::Store(err));
            assert_eq!(problem.status, 503);
            assert_eq!(problem.kind, "urn:jwksd:problem:storage-unavailable");
            assert_eq!(problem.retry_after, Some(STORAGE_RETRY_AFTER));
            assert!(!problem.detail.contains("disk full"), "no internal text");
        }
        // Data jwksd cannot read is not transient: the integrity problem, never a 500.
        let corrupt = Problem::from(Error::Store(StoreError::Corrupt("state 'x'".into())));
        assert_eq!(corrupt.status, 503);
        assert_eq!(corrupt.kind, "urn:jwksd:problem:store-integrity");
    }
}
