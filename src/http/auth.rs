//! Who is asking: bearer-token authentication as a type in the handler signature
//! ([`AdminAuth`], [`CallerAuth`], which also admits a caller by its rate). Which caller
//! may act for which client is not decided here: that rule is the signing service's
//! ([`crate::signing::SigningService::client_for`]).
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, so neither the
//! process memory nor a timing side channel gives a token away. Refusals are
//! [`AuthError`]s; `problem` maps them to HTTP.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use actix_web::HttpMessage;

use super::state::{RequestActor, State, TokenHash};
use crate::config::CallerConfig;

/// A request refused before its handler ran.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    #[error("send the admin token as Authorization: Bearer <token> (see server.admin_token)")]
    NoAdminToken,
    #[error("the admin token is not valid")]
    BadAdminToken,
    #[error("send the caller token as Authorization: Bearer <token>")]
    NoCallerToken,
    #[error("the caller token is not valid")]
    BadCallerToken,
    /// Over the caller's rate; `retry_after` in seconds.
    #[error("caller {caller} may make {per_minute} requests per minute")]
    RateLimited {
        caller: String,
        per_minute: u32,
        retry_after: u64,
    },
    /// The route was mounted without the shared state (a wiring bug).
    #[error("the request reached a handler without the service state")]
    NoState,
}

/// The bearer token of a request, if it has a well-formed `Authorization: Bearer` header.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Proof that the request carries the admin token.
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = AuthError;
    type Future = Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<State>>() else {
            return ready(Err(AuthError::NoState));
        };
        let result = match bearer(req) {
            None => Err(AuthError::NoAdminToken),
            Some(token) if state.admin_token.matches(&TokenHash::of(token)) => {
                req.extensions_mut().insert(RequestActor("admin".into()));
                Ok(AdminAuth)
            }
            Some(_) => Err(AuthError::BadAdminToken),
        };
        ready(result)
    }
}

/// The authenticated caller of a signing or token request, admitted by its rate limit
/// (401 without a valid token, 429 over the rate).
pub struct CallerAuth(pub CallerConfig);

impl FromRequest for CallerAuth {
    type Error = AuthError;
    type Future = Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<State>>() else {
            return ready(Err(AuthError::NoState));
        };
        let Some(token) = bearer(req) else {
            return ready(Err(AuthError::NoCallerToken));
        };
        let presented = TokenHash::of(token);
        let access = state.access();
        // Compare against every caller, without stopping at a match.
        let mut found = None;
        for caller in access.callers.values() {
            if presented.matches(&TokenHash::from_sha256(caller.token_sha256)) {
                found = Some(caller.clone());
            }
        }
        let Some(caller) = found else {
            return ready(Err(AuthError::BadCallerToken));
        };
        req.extensions_mut()
            .insert(RequestActor(caller.name.clone()));
        // Every caller request counts against the caller's rate, refused or not.
        let admitted = state
            .limiter
            .check(
                &caller.name,
                caller.rate_limit_per_minute,
                std::time::Instant::now(),
            )
            .map_err(|retry_after| AuthError::RateLimited {
                caller: caller.name.clone(),
                per_minute: caller.rate_limit_per_minute,
                retry_after,
            });
        ready(admitted.map(|()| CallerAuth(caller)))
    }
}
