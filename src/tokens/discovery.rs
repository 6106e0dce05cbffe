//! SMART discovery: `{fhir_base_url}/.well-known/smart-configuration` (SMART App Launch
//! §2.0.10), the document that names the token endpoint and what it supports.

use serde::{Deserialize, Serialize};

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
}

/// The discovery URL of a FHIR base URL.
pub fn discovery_url(fhir_base_url: &str) -> String {
    format!(
        "{}/.well-known/smart-configuration",
        fhir_base_url.trim_end_matches('/')
    )
}

/// Fetches and parses the SMART configuration of `fhir_base_url`.
pub async fn discover(
    http: &reqwest::Client,
    fhir_base_url: &str,
) -> Result<SmartConfiguration, DiscoveryError> {
    let url = discovery_url(fhir_base_url);
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
    let body = response.bytes().await.map_err(|e| DiscoveryError::Fetch {
        url: url.clone(),
        reason: super::describe_reqwest_error(&e),
    })?;
    let config: SmartConfiguration =
        serde_json::from_slice(&body).map_err(|e| DiscoveryError::Invalid {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if !crate::config::is_allowed_outbound_url(&config.token_endpoint) {
        // Assertions are sent there: never to plain http off this host, never to nothing.
        return Err(DiscoveryError::Invalid {
            url,
            reason: format!(
                "token_endpoint {:?} is not an https URL (http is accepted only on loopback)",
                config.token_endpoint
            ),
        });
    }
    Ok(config)
}
