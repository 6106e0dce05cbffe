//! The `[clients.*]` and `[callers.*]` sections: who may sign for which EHR client.
//!
//! A client binds an EHR `client_id` to a key set, a token endpoint and the audiences an
//! assertion may name. A caller is an internal service, known only by the SHA-256 of its
//! bearer token, allowed to ask for assertions for a list of clients. These sections can be
//! reloaded without a restart (SIGHUP), so they are validated into their own [`Access`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::keysets::DEFAULT_KEYSET;
use super::shape::Refused;
use super::values::{
    outbound_base_url, outbound_url, parse_duration, show, ConfigUrl, IntOrString,
};

/// Longest assertion lifetime SMART allows (`exp` at most 5 minutes in the future).
pub const MAX_ASSERTION_LIFETIME: i64 = 300;
/// Shortest: an assertion must survive the trip to the token endpoint and clock skew.
pub const MIN_ASSERTION_LIFETIME: i64 = 10;
/// Default per-caller rate: requests per minute, and the burst allowed above it.
const DEFAULT_RATE_PER_MINUTE: u32 = 6000;

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    client_id: Option<String>,
    keyset: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    fhir_base_url: Option<String>,
    scope: Option<String>,
    allowed_scopes: Option<Scopes>,
    assertion_lifetime: Option<String>,
}

/// Scopes written as one space-separated string, like `scope`, or as a list of strings.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum Scopes {
    Text(String),
    List(Vec<String>),
}

impl Scopes {
    fn split(self) -> Vec<String> {
        let text = match self {
            Scopes::Text(text) => text,
            Scopes::List(list) => list.join(" "),
        };
        text.split_whitespace().map(str::to_owned).collect()
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaller {
    token_sha256: Option<String>,
    token_file: Option<std::path::PathBuf>,
    #[serde(default)]
    clients: Vec<String>,
    rate_limit_per_minute: Option<IntOrString>,
}

/// One EHR client registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The name of the `[clients.NAME]` section.
    pub name: String,
    /// The client_id the EHR issued; `iss` and `sub` of every assertion.
    pub client_id: String,
    pub keyset: String,
    /// The token endpoint; `None` means: discover it from `fhir_base_url`.
    pub token_endpoint: Option<ConfigUrl>,
    /// Allowed `aud` values, the first being the default. Empty only when the token
    /// endpoint is discovered, which is then the one allowed audience. Kept as strings:
    /// they are claim values, compared byte for byte, not addresses jwksd connects to.
    pub audiences: Vec<String>,
    /// The FHIR base URL, without a trailing slash.
    pub fhir_base_url: Option<ConfigUrl>,
    /// The scope a token request asks for when its caller names none (`scope`).
    pub scope: Option<String>,
    /// The scopes a caller may ask for (`allowed_scopes`, by default the scopes of `scope`);
    /// `None` when neither is configured: then any short list of `system/` scopes.
    pub allowed_scopes: Option<Vec<String>>,
    /// Default assertion lifetime in seconds (at most 300).
    pub assertion_lifetime: i64,
}

/// One internal service allowed to ask for assertions.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerConfig {
    pub name: String,
    /// SHA-256 of the caller's bearer token.
    pub token_sha256: [u8; 32],
    /// Names of the clients it may sign for.
    pub clients: Vec<String>,
    pub rate_limit_per_minute: u32,
}

impl std::fmt::Debug for CallerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerConfig")
            .field("name", &self.name)
            .field("clients", &self.clients)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .finish_non_exhaustive()
    }
}

/// The reloadable part of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub clients: BTreeMap<String, ClientConfig>,
    pub callers: BTreeMap<String, CallerConfig>,
}

impl Access {
    /// Finds a client by section name, or else by its `client_id` when exactly one client
    /// has it.
    pub fn client(&self, name_or_id: &str) -> Option<&ClientConfig> {
        if let Some(client) = self.clients.get(name_or_id) {
            return Some(client);
        }
        let mut matches = self.clients.values().filter(|c| c.client_id == name_or_id);
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }
}

/// Validates the clients and callers. `keysets` are the names of every configured key set
/// (valid or not) and a caller may name any configured client (valid or not): a section
/// with a problem has that problem, and its users no second one.
pub(super) fn validate_access(
    raw_clients: BTreeMap<String, RawClient>,
    raw_callers: BTreeMap<String, RawCaller>,
    keysets: &BTreeSet<String>,
    refused: &Refused,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Access {
    let mut access = Access::default();
    let client_names: BTreeSet<String> = raw_clients.keys().cloned().collect();
    // client_id -> the first section that has it.
    let mut client_ids: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in raw_clients {
        let key = |field: &str| format!("clients.{name}.{field}");
        let section = format!("clients.{name}");
        // A refused value is unusable, not absent: no "is required" for it.
        let usable = |field: &str| !refused.has(&section, field);
        let before = problems.len();
        let client_id = raw.client_id.unwrap_or_default();
        if client_id.trim().is_empty() && usable("client_id") {
            problems.push(format!(
                "{} is required: the client_id the EHR issued",
                key("client_id")
            ));
        }
        if !client_id.trim().is_empty() {
            if let Some(first) = client_ids.get(&client_id) {
                problems.push(format!(
                    "{} = {client_id:?} is also the client_id of [clients.{first}]: requests \
                     name a client by its client_id, and [clients.{first}] and [clients.{name}] \
                     would both answer to it. Keep one of the two sections, or give each the \
                     client_id the EHR issued to it",
                    key("client_id")
                ));
            } else {
                client_ids.insert(client_id.clone(), name.clone());
            }
        }
        let keyset = raw.keyset.unwrap_or_else(|| DEFAULT_KEYSET.to_owned());
        if !keysets.contains(&keyset) && usable("keyset") {
            problems.push(format!(
                "{} = {keyset:?} names no configured key set (configured: {})",
                key("keyset"),
                keysets.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let token_endpoint_text = raw.token_endpoint.filter(|t| !t.trim().is_empty());
        let token_endpoint = match &token_endpoint_text {
            None if !usable("token_endpoint") || !usable("fhir_base_url") => None,
            None if raw.fhir_base_url.is_none() => {
                problems.push(format!(
                    "{} is required unless {} is set (then it is discovered): the exact token \
                     endpoint URL, which is also the assertion's audience",
                    key("token_endpoint"),
                    key("fhir_base_url")
                ));
                None
            }
            None => None,
            Some(url) => outbound_url(&key("token_endpoint"), url, problems),
        };
        let audiences = if raw.audiences.is_empty() {
            token_endpoint_text.iter().cloned().collect()
        } else {
            for audience in &raw.audiences {
                if audience.trim().is_empty() {
                    problems.push(format!("{} holds an empty audience", key("audiences")));
                }
            }
            raw.audiences
        };
        let fhir_base_url = raw
            .fhir_base_url
            .as_deref()
            .and_then(|url| outbound_base_url(&key("fhir_base_url"), url, problems));
        let lifetime = match raw.assertion_lifetime.as_deref() {
            None => Some(Duration::from_secs(240)),
            Some(text) => parse_duration(&key("assertion_lifetime"), text, problems),
        };
        let assertion_lifetime = lifetime.map_or(240, |d| d.as_secs() as i64);
        if let Some(d) = lifetime {
            if !(MIN_ASSERTION_LIFETIME..=MAX_ASSERTION_LIFETIME).contains(&assertion_lifetime) {
                problems.push(format!(
                    "{} = {} must be between 10s and 5m (SMART: exp at most 5 minutes ahead)",
                    key("assertion_lifetime"),
                    show(d)
                ));
            }
        }
        if let Some(scope) = &raw.scope {
            if scope.split_whitespace().any(|s| !s.starts_with("system/")) {
                warnings.push(format!(
                    "{} = {scope:?} holds scopes that are not system/ scopes; backend services get \
                     only system/ scopes",
                    key("scope")
                ));
            }
        }
        let allowed_scopes = match raw.allowed_scopes.map(Scopes::split) {
            Some(allowed) => {
                if allowed.is_empty() {
                    problems.push(format!(
                        "{} is empty: no caller could ask for any scope; list the scopes callers \
                         may ask for, or leave it out to allow those of {}",
                        key("allowed_scopes"),
                        key("scope")
                    ));
                }
                let default = raw.scope.as_deref().unwrap_or_default();
                let missing: Vec<&str> = default
                    .split_whitespace()
                    .filter(|s| !allowed.iter().any(|a| a == s))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "{} = {default:?} asks by default for {}, which {} does not allow; add \
                         it there or remove it from the default",
                        key("scope"),
                        missing.join(" "),
                        key("allowed_scopes")
                    ));
                }
                if allowed.iter().any(|s| !s.starts_with("system/")) {
                    warnings.push(format!(
                        "{} holds scopes that are not system/ scopes; backend services get only \
                         system/ scopes",
                        key("allowed_scopes")
                    ));
                }
                Some(allowed)
            }
            None => raw
                .scope
                .as_deref()
                .map(|scope| scope.split_whitespace().map(str::to_owned).collect()),
        };
        let any_refused = [
            "client_id",
            "keyset",
            "token_endpoint",
            "audiences",
            "fhir_base_url",
        ]
        .iter()
        .chain(&["scope", "allowed_scopes", "assertion_lifetime"])
        .any(|field| !usable(field));
        if problems.len() == before && !any_refused {
            access.clients.insert(
                name.clone(),
                ClientConfig {
                    name,
                    client_id,
                    keyset,
                    token_endpoint,
                    audiences,
                    fhir_base_url,
                    scope: raw.scope,
                    allowed_scopes,
                    assertion_lifetime,
                },
            );
        }
    }

    for (name, raw) in raw_callers {
        let key = |field: &str| format!("callers.{name}.{field}");
        let section = format!("callers.{name}");
        let usable = |field: &str| !refused.has(&section, field);
        let before = problems.len();
        let hash_text = match (raw.token_sha256, raw.token_file) {
            (None, None) if !usable("token_sha256") || !usable("token_file") => None,
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{} and {} are both set; keep one",
                    key("token_sha256"),
                    key("token_file")
                ));
                None
            }
            (Some(hash), None) => Some(hash),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(e) => {
                    problems.push(format!(
                        "{}: cannot read {}: {e}",
                        key("token_file"),
                        path.display()
                    ));
                    None
                }
            },
            (None, None) => {
                problems.push(format!(
                    "{} is required: the SHA-256 (hex) of the caller's token, as printed by `jwksd callers new-token`",
                    key("token_sha256")
                ));
                None
            }
        };
        let token_sha256 = hash_text.and_then(|text| {
            let text = text.trim().to_ascii_lowercase();
            let bytes = hex::decode(&text).ok().filter(|b| b.len() == 32);
            if bytes.is_none() {
                problems.push(format!(
                    "{} must be 64 hex digits (the SHA-256 of the token, never the token itself); \
                     `jwksd callers new-token` prints both",
                    key("token_sha256")
                ));
            }
            bytes.map(|b| {
                let mut out = [0u8; 32];
                out.copy_from_slice(&b);
                out
            })
        });
        if raw.clients.is_empty() && usable("clients") {
            warnings.push(format!(
                "{} is empty: this caller may sign for no client",
                key("clients")
            ));
        }
        for client in &raw.clients {
            if !client_names.contains(client) {
                problems.push(format!(
                    "{} names {client:?}, which is not a configured client",
                    key("clients")
                ));
            }
        }
        let rate = match raw.rate_limit_per_minute {
            None => Some(DEFAULT_RATE_PER_MINUTE),
            Some(value) => {
                let number = match value {
                    IntOrString::Int(i) => u32::try_from(i).ok(),
                    IntOrString::Text(t) => t.trim().parse().ok(),
                };
                let valid = number.filter(|n| *n >= 1);
                if valid.is_none() {
                    problems.push(format!(
                        "{} must be a whole number of requests per minute, at least 1",
                        key("rate_limit_per_minute")
                    ));
                }
                valid
            }
        };
        if let (Some(token_sha256), Some(rate)) = (token_sha256, rate) {
            let any_refused = [
                "token_sha256",
                "token_file",
                "clients",
                "rate_limit_per_minute",
            ]
            .iter()
            .any(|field| !usable(field));
            if problems.len() == before && !any_refused {
                access.callers.insert(
                    name.clone(),
                    CallerConfig {
                        name,
                        token_sha256,
                        clients: raw.clients,
                        rate_limit_per_minute: rate,
                    },
                );
            }
        }
    }
    for client in access.clients.values() {
        if let Some(other) = access.clients.get(&client.client_id) {
            if other.name != client.name {
                problems.push(format!(
                    "clients.{}.client_id = {:?} is the name of another section, [clients.{}]; \
                     requests name a client by either, so rename one of them",
                    client.name, client.client_id, other.name
                ));
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    for caller in access.callers.values() {
        if let Some(other) = seen.insert(caller.token_sha256, caller.name.clone()) {
            problems.push(format!(
                "callers {other} and {} have the same token; give each caller its own token",
                caller.name
            ));
        }
    }
    access
}
