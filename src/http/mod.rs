//! The HTTP layer: two listeners, their route tables, and the shared request state.
//!
//! The public listener serves only public things (JWKS, certificates, health) and is safe
//! to expose to EHRs; the private listener carries signing, tokens, the admin API and
//! metrics, and must stay internal. Handlers know actix, the services and the keyring's
//! snapshot, never SQL; they speak the wire types of [`crate::api`].
//!
//! Handler modules ([`admin`], [`signing`], [`tokens`], [`public`], [`metrics`]) never
//! import one another: what they share is in [`state`] (what every handler can
//! reach, the request counters), [`auth`] (who is asking, for which client), [`body`] (JSON bodies), [`limits`] (body
//! size and deadline) and [`problem`] (every refusal, mapped once).

pub mod admin;
pub mod auth;
pub mod body;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod public;
pub mod signing;
pub mod state;
pub mod tokens;

use actix_web::{web, HttpResponse};

use crate::api::Health;
use problem::{Problem, Unready};
pub use state::State;

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

async fn readyz(state: web::Data<state::State>) -> Result<HttpResponse, Problem> {
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
