//! Bearer-token authentication as a type in the handler signature.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, so neither the
//! process memory nor a timing side channel gives a token away.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use aws_lc_rs::digest;
use subtle::ConstantTimeEq;

use super::problem::Problem;
use super::State;
use crate::config::CallerConfig;

/// SHA-256 of a bearer token.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        TokenHash(out)
    }

    /// A digest computed elsewhere (the configuration keeps an inline admin token only as
    /// its SHA-256).
    pub fn from_sha256(digest: [u8; 32]) -> Self {
        TokenHash(digest)
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash([elided])")
    }
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
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<State>>() else {
            return ready(Err(Problem::internal()));
        };
        let result = match bearer(req) {
            None => Err(Problem::unauthorized(
                "send the admin token as Authorization: Bearer <token> (see server.admin_token)",
            )),
            Some(token) if state.admin_token.matches(&TokenHash::of(token)) => Ok(AdminAuth),
            Some(_) => Err(Problem::unauthorized("the admin token is not valid")),
        };
        ready(result)
    }
}

/// The authenticated caller of a signing or token request, admitted by its rate limit
/// (401 without a valid token, 429 over the rate).
pub struct CallerAuth(pub CallerConfig);

impl FromRequest for CallerAuth {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<State>>() else {
            return ready(Err(Problem::internal()));
        };
        let Some(token) = bearer(req) else {
            return ready(Err(Problem::unauthorized(
                "send the caller token as Authorization: Bearer <token>",
            )));
        };
        let presented = TokenHash::of(token);
        let access = state.access();
        // Compare against every caller, without stopping at a match.
        let mut found = None;
        for caller in access.callers.values() {
            if presented.matches(&TokenHash(caller.token_sha256)) {
                found = Some(caller.clone());
            }
        }
        let Some(caller) = found else {
            return ready(Err(Problem::unauthorized("the caller token is not valid")));
        };
        // Every caller request counts against the caller's rate, refused or not.
        let admitted = state
            .limiter
            .check(
                &caller.name,
                caller.rate_limit_per_minute,
                std::time::Instant::now(),
            )
            .map_err(|retry_after| super::signing::rate_limited(&caller, retry_after));
        ready(admitted.map(|()| CallerAuth(caller)))
    }
}
