//! `jwksd token`: asks the running service, as a caller, for an access token, the way a
//! calling service would (`POST /v1/tokens`).

use std::path::PathBuf;

use anyhow::Context;

use super::client::{pretty, Client, Target};
use crate::api::TokenRequest;

/// Prints the access token (or, with `json`, the whole answer).
pub async fn token(
    client: &str,
    scope: Option<String>,
    server: Option<String>,
    config: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let caller_token = std::env::var("JWKSD_CALLER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context("set JWKSD_CALLER_TOKEN to a caller token allowed for this client (`jwksd callers new-token`)")?;
    let target = Target {
        server,
        config,
        admin_token_file: None,
    };
    let jwksd = Client::caller(&target, caller_token.trim().to_owned())?;
    let answer = jwksd
        .token(&TokenRequest {
            client_id: client.to_owned(),
            scope,
        })
        .await?;
    if json {
        println!("{}", pretty(&answer)?);
    } else {
        println!("{}", answer.access_token);
    }
    Ok(())
}
