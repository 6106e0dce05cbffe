//! `jwksd healthcheck`: the container probe. Exits 0 when the service answers ready.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::client::{http_client, local_address};
use crate::api::Health;
use crate::config::Config;
use crate::tokens::upstream::read_limited;

/// A health answer is `{"status": "ready"}`; anything much longer is not one.
const HEALTH_ANSWER_LIMIT: usize = 4096;

/// Probes `url`, by default `/readyz` on the configured public listener.
pub async fn healthcheck(url: Option<String>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            format!(
                "http://{}/readyz",
                local_address(&config.server.public_listen)
            )
        }
    };
    let response = http_client()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    // A 200 from something else at that address (a proxy's page) is not jwksd being ready.
    let body = read_limited(response, HEALTH_ANSWER_LIMIT)
        .await
        .with_context(|| format!("{url} answered {status}, but its body could not be read"))?;
    serde_json::from_slice::<Health>(&body)
        .with_context(|| format!("{url} answered {status}, but not with jwksd's health answer"))?;
    Ok(())
}
