//! Problem details (RFC 9457): the closed list of problem kinds, and the one mapping from
//! every error jwksd answers with to one of them.
//!
//! [`ProblemKind`] owns the status, the `type` slug, the title and the default
//! `Retry-After` of each kind; nothing else in `http` chooses a status or a slug. Each
//! error type (the domain [`Error`], [`StoreError`], [`TokenError`], the signing service's
//! refusals, the authentication, body and limit refusals, actix's own 404/405/413) is
//! mapped here, one `match` per type.
//!
//! `detail` is written for the operator and never carries internal error text. An internal
//! failure (store, crypto, task, discovery) gets an error id: the cause is logged at ERROR
//! with that id, and the answer carries it as `error_id`, so the operator can find the line.
//! Every problem body also carries the `request_id` of the request it answers (see
//! `requests`), and tells `requests` its kind, which `/metrics` counts refusals by.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use tracing::{error, warn};

use super::auth::AuthError;
use super::body::BodyError;
use super::limits::LimitError;
use super::requests::{current_request_id, Authenticated, Refusal};
use super::state::{RecentRefusal, State};
use crate::api;
use crate::error::Error;
use crate::signing::{AccessError, AssertionError, SignError};
use crate::store::StoreError;
use crate::tokens::{ScopeError, TokenError};

/// Seconds a client waits before repeating a request refused for a storage failure.
pub const STORAGE_RETRY_AFTER: i64 = 5;

/// Every kind of problem jwksd answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    BadRequest,
    /// Sent with `WWW-Authenticate: Bearer` (RFC 6750 §3).
    Unauthorized,
    Forbidden,
    /// A status-page form without the session's CSRF token, or sent from another origin.
    CsrfRejected,
    NotFound,
    UnknownKeyset,
    UnknownKid,
    MethodNotAllowed,
    BodyTimeout,
    RotationTooEarly,
    /// `rotation_requires_fetch`: recent fetchers have not been served the next key.
    NextKeyNotFetched,
    NoNextKey,
    NotRevocable,
    ConcurrentChange,
    BodyTooLarge,
    UnsupportedMediaType,
    /// The body is JSON but not the request the route takes.
    InvalidRequest,
    InvalidScope,
    RateLimited,
    Internal,
    /// A SMART configuration document answered with something unusable.
    DiscoveryRefused,
    /// The token endpoint answered with a refusal.
    UpstreamRefused,
    /// The token endpoint did not answer (same `type` as [`ProblemKind::UpstreamRefused`]).
    UpstreamUnreachable,
    NotReady,
    /// The key set has no key that can sign: the one answer of `/v1/assertions` and
    /// `/v1/tokens` alike.
    NoSigningKey,
    /// A key refused to sign.
    SigningFailed,
    StorageUnavailable,
    StoreIntegrity,
    DiscoveryFailed,
}

impl ProblemKind {
    pub fn status(self) -> StatusCode {
        use ProblemKind::*;
        match self {
            BadRequest => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden | CsrfRejected => StatusCode::FORBIDDEN,
            NotFound | UnknownKeyset | UnknownKid => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            RotationTooEarly | NextKeyNotFetched | NoNextKey | NotRevocable | ConcurrentChange => {
                StatusCode::CONFLICT
            }
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidRequest | InvalidScope => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            DiscoveryRefused | UpstreamRefused => StatusCode::BAD_GATEWAY,
            UpstreamUnreachable => StatusCode::GATEWAY_TIMEOUT,
            NotReady | NoSigningKey | SigningFailed | StorageUnavailable | StoreIntegrity
            | DiscoveryFailed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem `type` is `urn:jwksd:problem:<slug>`.
    pub fn slug(self) -> &'static str {
        use ProblemKind::*;
        match self {
            BadRequest => "bad-request",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            CsrfRejected => "csrf-rejected",
            NotFound => "not-found",
            UnknownKeyset => "unknown-keyset",
            UnknownKid => "unknown-kid",
            MethodNotAllowed => "method-not-allowed",
            BodyTimeout => "body-timeout",
            RotationTooEarly => "rotation-too-early",
            NextKeyNotFetched => "next-key-not-fetched",
            NoNextKey => "no-next-key",
            NotRevocable => "not-revocable",
            ConcurrentChange => "concurrent-change",
            BodyTooLarge => "body-too-large",
            UnsupportedMediaType => "unsupported-media-type",
            InvalidRequest => "invalid-request",
            InvalidScope => "invalid-scope",
            RateLimited => "rate-limited",
            Internal => "internal",
            DiscoveryRefused => "discovery-refused",
            UpstreamRefused | UpstreamUnreachable => "upstream-refused",
            NotReady => "not-ready",
            NoSigningKey => "no-current-key",
            SigningFailed => "unavailable",
            StorageUnavailable => "storage-unavailable",
            StoreIntegrity => "store-integrity",
            DiscoveryFailed => "discovery-failed",
        }
    }

    pub fn title(self) -> &'static str {
        use ProblemKind::*;
        match self {
            BadRequest => "Bad Request",
            Unauthorized => "Unauthorized",
            Forbidden => "Forbidden",
            CsrfRejected => "Form Not Accepted",
            NotFound => "Not Found",
            UnknownKeyset => "Unknown Key Set",
            UnknownKid => "Unknown Key",
            MethodNotAllowed => "Method Not Allowed",
            BodyTimeout => "Request Timeout",
            RotationTooEarly => "Next Key Not Published Long Enough",
            NextKeyNotFetched => "Next Key Not Yet Fetched",
            NoNextKey => "No Next Key",
            NotRevocable => "Key Not Published",
            ConcurrentChange => "Concurrent Change",
            BodyTooLarge => "Payload Too Large",
            UnsupportedMediaType => "Unsupported Media Type",
            InvalidRequest => "Unprocessable Request",
            InvalidScope => "Invalid Scope",
            RateLimited => "Too Many Requests",
            Internal => "Internal Server Error",
            DiscoveryRefused => "SMART Discovery Answer Refused",
            UpstreamRefused | UpstreamUnreachable => "Token Request Failed",
            NotReady => "Not Ready",
            NoSigningKey => "No Usable Key",
            SigningFailed => "Service Unavailable",
            StorageUnavailable => "Storage Unavailable",
            StoreIntegrity => "Store Integrity Check Failed",
            DiscoveryFailed => "SMART Discovery Failed",
        }
    }

    /// The `Retry-After` sent unless the error itself knows better (a rotation's wait, a
    /// caller's rate, the token endpoint's own `Retry-After`).
    pub fn default_retry_after(self) -> Option<i64> {
        use ProblemKind::*;
        match self {
            NoNextKey | StoreIntegrity => Some(60),
            DiscoveryFailed => Some(30),
            NoSigningKey | SigningFailed | StorageUnavailable => Some(STORAGE_RETRY_AFTER),
            _ => None,
        }
    }
}

/// A problem, ready to send.
#[derive(Debug)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
    /// Seconds to wait, also sent as `Retry-After`.
    pub retry_after: Option<i64>,
    /// Set on internal failures: the id logged with the cause.
    pub error_id: Option<String>,
    /// Set when a token endpoint refused (boxed: it is large, and most problems have none).
    pub upstream: Option<Box<api::UpstreamFailure>>,
}

impl Problem {
    /// A problem of `kind` with its default `Retry-After`.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            retry_after: kind.default_retry_after(),
            error_id: None,
            upstream: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::NotFound, detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::BadRequest, detail)
    }

    /// An internal failure: logs `cause` at ERROR under a fresh error id, which the answer
    /// carries; `detail` is the fixed sentence the client sees.
    fn failure(
        kind: ProblemKind,
        cause: &dyn std::fmt::Display,
        message: &str,
        detail: impl Into<String>,
    ) -> Self {
        let id = error_id();
        error!(error_id = %id, error = %cause, "{message}");
        let mut problem = Problem::new(kind, detail);
        problem.error_id = Some(id);
        problem
    }

    fn with_retry_after(mut self, seconds: i64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The body as the API types describe it.
    pub fn to_api(&self) -> api::Problem {
        api::Problem {
            problem_type: format!("{}{}", api::PROBLEM_TYPE_PREFIX, self.kind.slug()),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            retry_after: self.retry_after,
            error_id: self.error_id.clone(),
            request_id: current_request_id(),
            upstream: self.upstream.as_deref().cloned(),
        }
    }

    /// The problem+json body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_api()).unwrap_or_default()
    }
}

/// A short random id for an internal failure (48 bits, 12 hex digits): unique enough to
/// find one log line, short enough to read out over the phone.
fn error_id() -> String {
    let mut bytes = [0u8; 6];
    // A failing system RNG leaves zeros: the id is only a search key, never a secret.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.kind.status().as_u16(),
            self.kind.title(),
            self.detail
        )
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.extensions_mut().insert(Refusal(self.kind.slug()));
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.kind == ProblemKind::Unauthorized {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jwksd\""),
            ));
        }
        let mut response = response.body(self.to_json());
        // Read back by `ensure_problem`, which records the refusal by its kind.
        response.extensions_mut().insert(self.kind);
        response
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        match err {
            Error::UnknownKeyset(_) => Problem::new(ProblemKind::UnknownKeyset, err.to_string()),
            Error::UnknownKid(_) => Problem::new(ProblemKind::UnknownKid, err.to_string()),
            Error::RotationTooEarly { retry_after, .. } => {
                Problem::new(ProblemKind::RotationTooEarly, err.to_string())
                    .with_retry_after(retry_after)
            }
            Error::NextKeyNotFetched { retry_after, .. } => {
                let problem = Problem::new(ProblemKind::NextKeyNotFetched, err.to_string());
                match retry_after {
                    Some(seconds) => problem.with_retry_after(seconds),
                    None => problem,
                }
            }
            Error::NoNextKey(_) => Problem::new(ProblemKind::NoNextKey, err.to_string()),
            Error::NotRevocable { .. } => Problem::new(ProblemKind::NotRevocable, err.to_string()),
            Error::Store(store) => Problem::from(store),
            // The stored keys failed an integrity check while running: see StoreError.
            Error::Integrity(_) => store_integrity(&err),
            Error::Key(_) | Error::Cert(_) | Error::Task(_) => internal(&err),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(_) => Problem::new(
                ProblemKind::ConcurrentChange,
                "the key set changed while this request was processed; nothing was changed, retry",
            ),
            ref e if e.is_storage_failure() => Problem::failure(
                ProblemKind::StorageUnavailable,
                e,
                "request refused: storage unavailable",
                "the key store cannot read or commit right now (the server log has the \
                 cause); nothing was changed, retry later",
            ),
            // Rows edited behind jwksd's back: changes are refused until the operator
            // restores the store; the keys in memory, verified when they were loaded, keep
            // serving.
            StoreError::Tampered(_) | StoreError::Corrupt(_) | StoreError::Database(_) => {
                store_integrity(&err)
            }
            StoreError::Unauthenticated | StoreError::Unavailable(_) => internal(&err),
        }
    }
}

fn store_integrity(cause: &dyn std::fmt::Display) -> Problem {
    Problem::failure(
        ProblemKind::StoreIntegrity,
        cause,
        "request refused: the store failed an integrity check",
        "the key store holds data jwksd did not write (the server log names it); nothing was \
         changed. Restore the store from a backup",
    )
}

fn internal(cause: &dyn std::fmt::Display) -> Problem {
    Problem::failure(
        ProblemKind::Internal,
        cause,
        "request failed",
        "jwksd could not complete the request; the server log has the cause. Nothing was changed.",
    )
}

impl From<SignError> for Problem {
    fn from(err: SignError) -> Self {
        match err {
            SignError::NoSigningKey { .. } => {
                Problem::new(ProblemKind::NoSigningKey, err.to_string())
            }
            SignError::Signing { .. } => Problem::failure(
                ProblemKind::SigningFailed,
                &err,
                "signing failed",
                "signing failed; retry",
            ),
            SignError::AuditUnavailable { .. } => Problem::failure(
                ProblemKind::StorageUnavailable,
                &err,
                "assertion withheld: audit unavailable",
                "the audit trail is unavailable, so no assertion was issued; retry",
            ),
        }
    }
}

impl From<AccessError> for Problem {
    fn from(err: AccessError) -> Self {
        match err {
            AccessError::UnknownClient => Problem::new(ProblemKind::NotFound, err.to_string()),
            AccessError::NotPermitted { .. } => {
                Problem::new(ProblemKind::Forbidden, err.to_string())
            }
        }
    }
}

impl From<AssertionError<TokenError>> for Problem {
    fn from(err: AssertionError<TokenError>) -> Self {
        match err {
            AssertionError::LifetimeOutOfRange => {
                Problem::new(ProblemKind::InvalidRequest, err.to_string())
            }
            AssertionError::Access(e) => Problem::from(e),
            AssertionError::Endpoint(e) => Problem::from(e),
            AssertionError::AudienceNotAllowed { .. } => {
                Problem::new(ProblemKind::Forbidden, err.to_string())
            }
            AssertionError::Sign(e) => Problem::from(e),
        }
    }
}

impl From<ScopeError> for Problem {
    fn from(err: ScopeError) -> Self {
        match err {
            ScopeError::NotGranted { .. } => Problem::new(ProblemKind::Forbidden, err.to_string()),
            ScopeError::Invalid(detail) => Problem::new(ProblemKind::InvalidScope, detail),
        }
    }
}

/// A failed token request: the upstream error and jwksd's diagnosis when the token
/// endpoint refused.
impl From<TokenError> for Problem {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Discovery(e) if e.is_bad_answer() => {
                // The discovery document answered with something unusable: say what and why
                // (its values are bounded by the discovery module); no assertion was signed.
                warn!(error = %e, "SMART discovery answer refused");
                Problem::new(
                    ProblemKind::DiscoveryRefused,
                    format!("{e}; no assertion was signed or sent"),
                )
            }
            TokenError::Discovery(e) => Problem::failure(
                ProblemKind::DiscoveryFailed,
                &e,
                "SMART discovery failed",
                "the token endpoint could not be discovered from the client's fhir_base_url; the server log has the cause",
            ),
            TokenError::Sign(e) => Problem::from(e),
            TokenError::Upstream {
                class,
                status,
                error,
                error_description,
                error_uri,
                retry_after,
                diagnosis,
            } => {
                let kind = if status.is_none() {
                    ProblemKind::UpstreamUnreachable
                } else {
                    ProblemKind::UpstreamRefused
                };
                let detail = match status {
                    None => format!("the token request failed: {}", class.explanation()),
                    Some(_) => format!("the token endpoint refused: {}", class.explanation()),
                };
                let mut problem = Problem::new(kind, detail);
                problem.upstream = Some(Box::new(api::UpstreamFailure {
                    classification: class,
                    fix: class.fix().to_owned(),
                    upstream_status: status,
                    error,
                    error_description,
                    error_uri,
                    diagnosis: *diagnosis,
                }));
                match retry_after {
                    Some(seconds) => problem.with_retry_after(seconds as i64),
                    None => problem,
                }
            }
        }
    }
}

/// The kind each authentication refusal answers as: the one mapping, read by both the
/// problem and [`ResponseError::status_code`] (which must not log, as an internal
/// problem's construction does).
fn auth_kind(err: &AuthError) -> ProblemKind {
    match err {
        AuthError::NoAdminToken
        | AuthError::BadAdminToken
        | AuthError::NoCallerToken
        | AuthError::BadCallerToken => ProblemKind::Unauthorized,
        AuthError::RateLimited { .. } => ProblemKind::RateLimited,
        AuthError::NoState => ProblemKind::Internal,
    }
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        let kind = auth_kind(&err);
        match err {
            AuthError::RateLimited { retry_after, .. } => {
                Problem::new(kind, err.to_string()).with_retry_after(retry_after as i64)
            }
            AuthError::NoState => internal(&err),
            _ => Problem::new(kind, err.to_string()),
        }
    }
}

// The extractors return `AuthError`; it answers as its problem.
impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        auth_kind(self).status()
    }

    fn error_response(&self) -> HttpResponse {
        Problem::from(self.clone()).error_response()
    }
}

impl From<BodyError> for Problem {
    fn from(err: BodyError) -> Self {
        let kind = match err {
            BodyError::NotJson => ProblemKind::UnsupportedMediaType,
            BodyError::Syntax { .. } | BodyError::DuplicateMember(_) | BodyError::Query(_) => {
                ProblemKind::BadRequest
            }
            BodyError::NotAnObject | BodyError::Shape(_) => ProblemKind::InvalidRequest,
            BodyError::TooLarge { .. } => ProblemKind::BodyTooLarge,
        };
        Problem::new(kind, err.to_string())
    }
}

impl From<&LimitError> for Problem {
    fn from(err: &LimitError) -> Self {
        let kind = match err {
            LimitError::TooLarge { .. } => ProblemKind::BodyTooLarge,
            LimitError::Broken => ProblemKind::BadRequest,
            LimitError::Timeout { .. } => ProblemKind::BodyTimeout,
        };
        Problem::new(kind, err.to_string())
    }
}

// The body-limit middleware answers with `LimitError`s directly.
impl ResponseError for LimitError {
    fn status_code(&self) -> StatusCode {
        Problem::from(self).status()
    }

    fn error_response(&self) -> HttpResponse {
        Problem::from(self).error_response()
    }
}

/// Why `/readyz` is not ready.
#[derive(Debug)]
pub enum Unready {
    /// The store cannot commit a write.
    Store(StoreError),
    /// A key set has no key that signs yet.
    NoSigningKey,
}

impl From<Unready> for Problem {
    fn from(unready: Unready) -> Self {
        match unready {
            Unready::Store(e) => Problem::failure(
                ProblemKind::NotReady,
                &e,
                "readiness: the store cannot commit",
                "the key store cannot commit a write (unreachable, or the disk is full)",
            )
            .with_retry_after(STORAGE_RETRY_AFTER),
            Unready::NoSigningKey => {
                Problem::new(ProblemKind::NotReady, "a key set has no signing key yet")
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
            ProblemKind::MethodNotAllowed,
            "this resource does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            ProblemKind::BodyTooLarge,
            "the request body is larger than this endpoint accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send the body as application/json",
        ),
        s if s.is_client_error() => Problem::bad_request("the request could not be read"),
        s => internal(&format_args!(
            "an error response without a problem body: {s}"
        )),
    }
}

/// Keeps an extractor message short and printable: it may quote the client's own input.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// An error answer the status page wrote as HTML for a person, with the problem kind it
/// stands for: `ensure_problem` records it and leaves it as it is.
#[derive(Clone, Copy, Debug)]
pub struct HtmlRefusal(pub ProblemKind);

/// Puts `kind` on the status page's list of recent refusals (the request's route pattern,
/// method and authenticated actor; nothing else of the request).
fn record_refusal(req: &actix_web::HttpRequest, status: StatusCode, kind: ProblemKind) {
    use actix_web::HttpMessage;
    let Some(state) = req.app_data::<actix_web::web::Data<State>>() else {
        return;
    };
    state.refusals.record(RecentRefusal {
        time: crate::unix_now(),
        method: req.method().as_str().chars().take(16).collect(),
        route: req
            .match_pattern()
            .unwrap_or_else(|| "(no route)".to_owned()),
        status: status.as_u16(),
        slug: kind.slug(),
        actor: req.extensions().get::<Authenticated>().map(|a| a.0.clone()),
    });
}

/// Middleware hook: any error response that is not already a problem (actix's own 404,
/// 405, 413 from a body limit, ...) is rewritten as one, so every refusal has one shape.
/// Every refusal is also recorded for the status page.
pub fn ensure_problem<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let status = res.status();
    let html = res.response().extensions().get::<HtmlRefusal>().copied();
    if let Some(HtmlRefusal(kind)) = html {
        record_refusal(res.request(), status, kind);
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let already = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if already {
        let kind = res.response().extensions().get::<ProblemKind>().copied();
        if let Some(kind) = kind {
            record_refusal(res.request(), status, kind);
        }
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let problem = for_status(status);
    record_refusal(res.request(), status, problem.kind);
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

    #[test]
    fn storage_failures_are_503_with_retry_after_and_bad_data_is_not() {
        for err in [
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable("disk full".into()),
        ] {
            let problem = Problem::from(Error::Store(err)).to_api();
            assert_eq!(problem.status, 503);
            assert_eq!(
                problem.problem_type,
                "urn:jwksd:problem:storage-unavailable"
            );
            assert_eq!(problem.retry_after, Some(STORAGE_RETRY_AFTER));
            assert!(!problem.detail.contains("disk full"), "no internal text");
        }
        // Data jwksd cannot read is not transient: the integrity problem, never a 500.
        let corrupt = Problem::from(Error::Store(StoreError::Corrupt("state 'x'".into())));
        assert_eq!(corrupt.status(), 503);
        assert_eq!(
            corrupt.to_api().problem_type,
            "urn:jwksd:problem:store-integrity"
        );
    }

    #[test]
    fn an_internal_failure_is_logged_with_its_cause_under_the_id_the_answer_carries() {
        let log = crate::logging::CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let problem = tracing::subscriber::with_default(subscriber, || {
            // Another test's thread may have met this callsite first, while no subscriber
            // wanted it, and tracing caches that for every thread: ask again now that this
            // thread's subscriber exists.
            tracing::callsite::rebuild_interest_cache();
            Problem::from(Error::Task("the key generator panicked".into()))
        });
        let body: api::Problem = serde_json::from_str(&problem.to_json()).unwrap();
        assert_eq!(body.status, 500);
        assert!(!body.detail.contains("panicked"), "no internal text");
        let id = body
            .error_id
            .expect("an internal failure carries an error id");
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let log = log.text();
        let line = log
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("no log line with {id} in {log:?}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("the key generator panicked"), "{line}");
        // Another failure, another id; a refusal that is not a failure has none.
        let again = Problem::from(Error::Task("x".into()));
        assert_ne!(again.error_id.as_deref(), Some(id.as_str()));
        assert_eq!(Problem::not_found("no").error_id, None);
    }

    #[test]
    fn an_unavailable_audit_trail_is_one_answer_whichever_path_found_it() {
        let unavailable = || SignError::AuditUnavailable {
            cause: "disk full".into(),
        };
        let without_id = |mut problem: api::Problem| {
            assert!(problem.error_id.take().is_some(), "a failure carries an id");
            problem
        };
        let assertion =
            without_id(Problem::from(AssertionError::<TokenError>::Sign(unavailable())).to_api());
        let token = without_id(Problem::from(TokenError::Sign(unavailable())).to_api());
        assert_eq!(assertion, token);
        assert_eq!(assertion.status, 503);
        assert_eq!(assertion.slug(), "storage-unavailable");
        assert!(!assertion.detail.contains("disk full"), "no internal text");
    }

    #[test]
    fn an_authentication_refusal_has_the_status_of_its_problem() {
        for err in [
            AuthError::NoAdminToken,
            AuthError::BadAdminToken,
            AuthError::NoCallerToken,
            AuthError::BadCallerToken,
            AuthError::RateLimited {
                caller: "billing".into(),
                per_minute: 60,
                retry_after: 3,
            },
            AuthError::NoState,
        ] {
            assert_eq!(
                err.status_code(),
                Problem::from(err.clone()).status(),
                "{err:?}"
            );
            assert_eq!(err.status_code(), err.error_response().status(), "{err:?}");
        }
    }

    #[test]
    fn no_signing_key_is_one_answer_whichever_path_found_it() {
        let no_key = || SignError::NoSigningKey {
            keyset: "default".into(),
        };
        let assertion = Problem::from(AssertionError::<TokenError>::Sign(no_key())).to_api();
        let token = Problem::from(TokenError::Sign(no_key())).to_api();
        assert_eq!(assertion, token);
        assert_eq!(assertion.status, 503);
        assert_eq!(assertion.slug(), "no-current-key");
        assert_eq!(assertion.retry_after, Some(5));
    }
}
