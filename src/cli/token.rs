//! `jwksd token`: asks the running service, as a caller, for an access token, the way a
//! calling service would (`POST /v1/tokens`).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use super::client::{pretty, Client, Target};

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
    let mut body = serde_json::json!({ "client_id": client });
    if let Some(scope) = scope {
        body["scope"] = Value::String(scope);
    }
    let answer: Value = jwksd.token(&body).await?;
    if json {
        println!("{}", pretty(&answer)?);
    } else {
        println!("{}", answer["access_token"].as_str().unwrap_or_default());
    }
    Ok(())
}
