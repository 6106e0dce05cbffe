//! The HTTP layer: two listeners, their route tables, and the shared request state.
//!
//! The public listener serves only public things (JWKS, certificates, health) and is safe
//! to expose to EHRs; the private listener carries the admin API (and later signing and
//! tokens) and must stay internal. Handlers know actix and the keyring, never SQL.

pub mod admin;
pub mod auth;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod public;
pub mod signing;
pub mod tokens;

use std::sync::{Arc, RwLock};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::config::Access;
use crate::keyring::Keyring;
use crate::ratelimit::RateLimiter;
use crate::tokens::TokenService;
use crate::trail::AuditWriter;
use auth::TokenHash;
use problem::Problem;

/// What every handler can reach.
pub struct State {
    pub keyring: Arc<Keyring>,
    pub admin_token: TokenHash,
    /// `server.public_url`, without a trailing slash; empty when unset (paths are then
    /// shown relative to the public listener).
    pub public_url: String,
    /// Clients and callers; replaced whole on reload.
    pub access: RwLock<Arc<Access>>,
    pub audit: AuditWriter,
    pub limiter: RateLimiter,
    pub tokens: Arc<TokenService>,
    pub metrics: metrics::Metrics,
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
        .json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<State>) -> Result<HttpResponse, Problem> {
    if let Err(e) = state.keyring.store().ping().await {
        tracing::error!(error = %e, "readiness: the store cannot commit");
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not Ready",
            "the key store cannot commit a write (unreachable, or the disk is full)",
        )
        .with_retry_after(problem::STORAGE_RETRY_AFTER));
    }
    if !state.keyring.is_ready() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not Ready",
            "a key set has no signing key yet",
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({ "status": "ready" })))
}
