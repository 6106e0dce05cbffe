//! `jwksd healthcheck`: the container probe. Exits 0 when the probed URL answers 2xx
//! (by default the configured public listener's `/readyz`), and fails on any other answer
//! or none. The body is not read: a 2xx is the answer.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::client::{http_client, local_address};
use crate::config::Config;

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
    if response.status().is_success() {
        Ok(())
    } else {
        bail!("{url} answered {}", response.status())
    }
}
