//! The HTTP layer: the handler modules of both listeners, what they share, and what both
//! listeners mount alike ([`common`] limits and error shapes, [`not_found`]). `app` builds
//! the two listeners from these tables.
//!
//! The public listener serves only public things ([`public`]: JWKS, certificates; and
//! [`health`]) and is safe to expose to EHRs; the private listener carries [`assertions`],
//! [`tokens`], [`admin`], [`metrics`], [`health`] and the [`status`] page, and must stay
//! internal. Handlers know
//! actix, the services and the keyring's snapshot, never SQL; they speak the wire types of
//! [`crate::api`].
//!
//! Handler modules ([`admin`], [`assertions`], [`tokens`], [`public`], [`metrics`],
//! [`health`], [`status`]) never import one another nor this module: what they share is in [`state`]
//! (what every handler can reach, the request counters), [`auth`] (who is asking),
//! [`body`] (JSON bodies), [`limits`] (body size and deadline), [`problem`] (every
//! refusal, mapped once) and [`requests`] (the request id and log line of every request,
//! the outermost middleware of both listeners).

pub mod admin;
pub mod assertions;
pub mod auth;
pub mod body;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod public;
pub mod requests;
pub mod state;
pub mod status;
pub mod tokens;

use actix_web::{web, HttpResponse};

use problem::Problem;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use actix_web::middleware::ErrorHandlers;
    use actix_web::{test, web, App};

    use super::state::{State, TokenHash};
    use crate::api;
    use crate::keyring::Keyring;
    use crate::keys::MasterKey;
    use crate::signing::SigningService;
    use crate::store::sqlite::SqliteStore;
    use crate::tokens::{outbound_client, TokenService};
    use crate::trail::AuditWriter;

    const CALLER_TOKEN: &str = "caller-token-for-the-no-key-test";

    /// Through configuration a client's key set always runs with a signing key (reloads
    /// refuse a client of a key set that does not run, and the keyring brings every key set
    /// to a signing key before serving), so the keyring here runs without the client's key
    /// set.
    #[actix_web::test]
    async fn assertions_and_tokens_answer_no_signing_key_identically() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("jwksd.toml");
        let hash = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            CALLER_TOKEN.as_bytes(),
        ));
        std::fs::write(
            &config_path,
            format!(
                r#"
[keysets.default]
alg = "ES256"

[clients.ecw]
client_id = "ecw-client-id"
keyset = "default"
token_endpoint = "http://127.0.0.1:9/token"

[callers.billing]
token_sha256 = "{hash}"
clients = ["ecw"]
"#
            ),
        )
        .unwrap();
        let config = crate::config::Config::load(Some(&config_path), Vec::new()).unwrap();
        let master = Arc::new(MasterKey::generate().0);
        let store = SqliteStore::open(&dir.path().join("jwksd.db"), true, Some(master.clone()))
            .await
            .unwrap();
        let keyring = Arc::new(
            Keyring::open(
                Arc::new(store),
                master,
                BTreeMap::new(),
                true,
                false,
                crate::unix_now(),
            )
            .await
            .unwrap(),
        );
        let audit = AuditWriter::start(keyring.store().clone());
        let state = web::Data::new(State::new(
            keyring.clone(),
            TokenHash::of("admin"),
            None,
            config.access.clone(),
            Arc::new(SigningService::new(keyring, audit)),
            Arc::new(TokenService::new(
                outbound_client().unwrap(),
                crate::system_clock(),
            )),
        ));
        let app = test::init_service(
            App::new()
                .wrap(ErrorHandlers::new().default_handler(super::problem::ensure_problem))
                .app_data(state)
                .configure(super::common)
                .configure(super::assertions::routes)
                .configure(super::tokens::routes),
        )
        .await;
        let mut answers = Vec::new();
        for path in ["/v1/assertions", "/v1/tokens"] {
            let request = test::TestRequest::post()
                .uri(path)
                .insert_header(("Authorization", format!("Bearer {CALLER_TOKEN}")))
                .set_json(serde_json::json!({ "client_id": "ecw" }))
                .to_request();
            let response = test::call_service(&app, request).await;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let (retry_after, content_type) = (header("retry-after"), header("content-type"));
            let body: api::Problem = test::read_body_json(response).await;
            answers.push((status, retry_after, content_type, body));
        }
        let (status, retry_after, content_type, problem) = &answers[0];
        assert_eq!(*status, 503);
        assert_eq!(retry_after.as_deref(), Some("5"));
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(problem.slug(), "no-current-key");
        assert_eq!(problem.retry_after, Some(5));
        assert_eq!(problem.detail, "key set default has no usable key yet");
        assert_eq!(answers[0], answers[1], "one answer on both paths");
    }
}
