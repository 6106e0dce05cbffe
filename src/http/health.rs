//! `GET /healthz` (liveness) and `GET /readyz` (readiness: the store answers and every key
//! set can sign), with `HEAD` for both. The one health table, mounted by `app` on both
//! listeners alike.

use actix_web::{web, HttpResponse};

use super::problem::{Problem, Unready};
use super::state::State;
use crate::api::Health;

pub fn routes(cfg: &mut web::ServiceConfig) {
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
