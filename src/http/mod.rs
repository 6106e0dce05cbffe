//! The HTTP layer: two listeners, their route tables, and the shared request state.
//!
//! The public listener serves only public things (JWKS, certificates, health) and is safe
//! to expose to EHRs; the private listener carries signing, tokens, the admin API and
//! metrics, and must stay internal. Handlers know actix, the services and the keyring's
//! snapshot, never SQL; they speak the wire types of [`crate::api`].
//!
//! Handler modules ([`admin`], [`signing`], [`tokens`], [`public`], [`metrics`]) never
//! import one another: what they share is here ([`State`], [`Metrics`], health), in
//! [`auth`] (who is asking, for which client), [`body`] (JSON bodies), [`limits`] (body
//! size and deadline) and [`problem`] (every refusal, mapped once).

pub mod admin;
pub mod auth;
pub mod body;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod public;
pub mod signing;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use actix_web::{web, HttpResponse};

use crate::api::Health;
use crate::config::Access;
use crate::keyring::Keyring;
use crate::ratelimit::RateLimiter;
use crate::signing::SigningService;
use crate::tokens::TokenService;
use auth::TokenHash;
use problem::{Problem, Unready};

/// What every handler can reach.
pub struct State {
    pub keyring: Arc<Keyring>,
    pub admin_token: TokenHash,
    /// `server.public_url`, without a trailing slash; empty when unset (paths are then
    /// shown relative to the public listener).
    pub public_url: String,
    /// Clients and callers; replaced whole on reload.
    pub access: RwLock<Arc<Access>>,
    /// Signs and records every assertion, for callers and for token requests.
    pub signing: Arc<SigningService>,
    pub limiter: RateLimiter,
    pub tokens: Arc<TokenService>,
    pub metrics: Metrics,
}

/// Request counters, bumped by the handlers and read by `GET /metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub jwks_served: AtomicU64,
    pub jwks_not_modified: AtomicU64,
    pub assertions_issued: AtomicU64,
    pub tokens_from_cache: AtomicU64,
    pub tokens_fetched: AtomicU64,
    pub token_failures: AtomicU64,
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl State {
    /// The clients and callers in force now.
    pub fn access(&self) -> Arc<Access> {
        match self.access.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new set of clients and callers in force.
    pub fn set_access(&self, access: Access) {
        let access = Arc::new(access);
        match self.access.write() {
            Ok(mut guard) => *guard = access,
            Err(poisoned) => *poisoned.into_inner() = access,
        }
    }

    /// Base for public URLs in admin answers.
    pub fn public_base(&self) -> String {
        self.public_url.clone()
    }
}

/// The largest request body any route accepts (signing and token requests are far smaller).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Limits and error shapes shared by both listeners.
pub fn common(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default().error_handler(|e, _| problem::from_extractor(e.into())),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| problem::from_extractor(e.into())))
    .app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|e, _| problem::from_extractor(e.into())),
    )
    .app_data(web::PayloadConfig::new(MAX_BODY_BYTES));
}

/// Any path no route knows.
pub async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found("no such resource"))
}

/// `GET /healthz` and `GET /readyz`, on both listeners.
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(healthz).head(healthz))
        .service(web::resource("/readyz").get(readyz).head(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Health::ok())
}

async fn readyz(state: web::Data<State>) -> Result<HttpResponse, Problem> {
    if let Err(e) = state.keyring.store().ping().await {
        return Err(Unready::Store(e).into());
    }
    if !state.keyring.is_ready() {
        return Err(Unready::NoSigningKey.into());
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Health::ready()))
}
