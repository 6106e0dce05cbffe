//! SMART discovery: `{fhir_base_url}/.well-known/smart-configuration` (SMART App Launch
//! §2.0.10), the document that names the token endpoint and what it supports.
//!
//! The document comes from the network, so the token endpoint it names is checked before
//! anything is signed for it ([`super::upstream::check_discovered_endpoint`]), and the
//! document is read only up to [`super::upstream::DISCOVERY_LIMIT`] bytes.

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::upstream::{bounded, check_discovered_endpoint, read_limited, DISCOVERY_LIMIT};

/// The members of the SMART configuration jwksd uses. Many live servers omit some.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SmartConfiguration {
    pub token_endpoint: String,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// Discovery failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{url} could not be fetched: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not a SMART configuration document: {reason}")]
    Invalid { url: String, reason: String },
    /// The document names a token endpoint jwksd will not send assertions to.
    #[error("{url} names token_endpoint {endpoint:?}, which jwksd refuses: {reason}")]
    Refused {
        url: String,
        /// The refused URL, bounded (it comes from the network).
        endpoint: String,
        reason: String,
    },
}

impl DiscoveryError {
    /// Whether the server answered, but with something jwksd cannot use (a bad gateway),
    /// rather than not answering usefully at all.
    pub fn is_bad_answer(&self) -> bool {
        matches!(
            self,
            DiscoveryError::Invalid { .. } | DiscoveryError::Refused { .. }
        )
    }
}

/// The discovery URL of a FHIR base URL.
pub fn discovery_url(fhir_base_url: &str) -> String {
    format!(
        "{}/.well-known/smart-configuration",
        fhir_base_url.trim_end_matches('/')
    )
}

/// Fetches and parses the SMART configuration of `fhir_base_url` (parsed by the caller:
/// the configuration when it loads, `doctor` from the admin API's answer).
pub async fn discover(
    http: &reqwest::Client,
    fhir_base_url: &Url,
) -> Result<SmartConfiguration, DiscoveryError> {
    let url = discovery_url(fhir_base_url.as_str());
    let response = http
        .get(&url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| DiscoveryError::Fetch {
            url: url.clone(),
            reason: super::describe_reqwest_error(&e),
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(DiscoveryError::Status { url, status });
    }
    let body =
        read_limited(response, DISCOVERY_LIMIT)
            .await
            .map_err(|e| DiscoveryError::Invalid {
                url: url.clone(),
                reason: e.to_string(),
            })?;
    let config: SmartConfiguration =
        serde_json::from_slice(&body).map_err(|e| DiscoveryError::Invalid {
            url: url.clone(),
            // serde quotes offending values, which come from the network.
            reason: bounded(&e.to_string(), 200),
        })?;
    // Assertions are sent there: never to plain http off this host, never to this host's
    // own services on behalf of a remote document, never to nothing.
    if let Err(reason) = check_discovered_endpoint(fhir_base_url, &config.token_endpoint) {
        return Err(DiscoveryError::Refused {
            url,
            endpoint: bounded(&config.token_endpoint, 200),
            reason,
        });
    }
    Ok(config)
}
