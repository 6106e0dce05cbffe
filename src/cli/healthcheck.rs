//! `jwksd healthcheck`: the container probe. Exits 0 when the probed URL answers 2xx
//! (by default the configured public listener's `/readyz`), and fails on any other answer
//! or none. The body is not read: a 2xx is the answer. A public listener with TLS is probed
//! over https, trusting exactly its configured certificate (see `client::Trust`).

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::client::{http_client, local_address, Trust};
use crate::config::Config;

/// Probes `url`, by default `/readyz` on the configured public listener.
pub async fn healthcheck(url: Option<String>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let (url, trust) = match url {
        Some(url) => (url, Trust::Roots),
        None => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            let trust = Trust::of_listener(config.server.public_tls.as_ref());
            let url = format!(
                "{}://{}/readyz",
                trust.scheme(),
                local_address(&config.server.public_listen)
            );
            (url, trust)
        }
    };
    let response = http_client(&trust)?
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
