//! Value syntax shared by every section: durations (`"90s"`, `"24h"`), numbers that may
//! arrive as strings (from the environment), URLs (parsed once, here, with the `url` crate
//! that reqwest connects with), and the digest secrets are compared by. Leaf module: it
//! knows no section.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// Numbers from the environment arrive as strings; accept both.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum IntOrString {
    Int(i64),
    Text(String),
}

pub(super) fn parse_duration(
    what: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) => Some(d),
        Err(_) => {
            problems.push(format!(
                "{what} = {text:?} is not a duration; write it like \"90s\", \"15m\", \"24h\" or \"90d\""
            ));
            None
        }
    }
}

/// A duration as the configuration writes it (`1h 15m`).
pub(super) fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A URL from the configuration, parsed when the configuration is loaded.
///
/// It keeps the text as the operator wrote it beside the parsed [`Url`]. The text is what
/// jwksd shows and signs: an assertion's `aud` is the token endpoint exactly, and the `url`
/// crate would turn `https://EHR.example:443/token` into another string. The parsed URL is
/// what host checks use, so that the host checked is the host reqwest connects to.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    text: String,
    url: Url,
}

impl ConfigUrl {
    /// Parses an absolute URL; `text` is kept as given.
    pub fn parse(text: &str) -> Result<Self, url::ParseError> {
        Ok(ConfigUrl {
            url: Url::parse(text)?,
            text: text.to_owned(),
        })
    }

    /// The URL as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the host is one of the loopback names the configuration rules accept for
    /// plain http: `127.0.0.1`, `[::1]` and `localhost` (in any spelling the `url` crate
    /// reads as one of them, such as `http://LOCALHOST` or `http://2130706433`).
    pub fn is_loopback(&self) -> bool {
        match self.url.host() {
            Some(Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
            Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
            Some(Host::Domain(name)) => name == "localhost",
            None => false,
        }
    }

    /// Whether jwksd may send assertions here: `https://` with a host, or `http://` on a
    /// loopback host (development and tests).
    pub fn is_allowed_outbound(&self) -> bool {
        let has_host = self.url.host_str().is_some_and(|h| !h.is_empty());
        has_host
            && match self.url.scheme() {
                "https" => true,
                "http" => self.is_loopback(),
                _ => false,
            }
    }
}

impl fmt::Display for ConfigUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ConfigUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// Serialised as written (the admin API shows the configured URLs).
impl Serialize for ConfigUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Whether `text` starts like an http(s) URL (for telling "not a URL" from "not https").
pub(super) fn has_http_scheme(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// `text` as a URL jwksd may send assertions to (see [`ConfigUrl::is_allowed_outbound`]);
/// otherwise a problem naming `what`.
pub(super) fn outbound_url(
    what: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<ConfigUrl> {
    outbound(what, text, text, problems)
}

/// A base URL jwksd appends paths to (`fhir_base_url`: discovery appends
/// `/.well-known/...` to the base as written), under the rules of [`outbound_url`]: parsed
/// once, without its trailing slashes; a refusal quotes `text` as configured.
pub(super) fn outbound_base_url(
    what: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<ConfigUrl> {
    outbound(what, text, text.trim_end_matches('/'), problems)
}

/// `kept` (`text`, or what of it is kept) parsed as an outbound URL.
fn outbound(what: &str, text: &str, kept: &str, problems: &mut Vec<String>) -> Option<ConfigUrl> {
    match ConfigUrl::parse(kept) {
        // The url crate drops leading spaces; jwksd never accepted them.
        Ok(url) if url.is_allowed_outbound() && !text.starts_with(char::is_whitespace) => Some(url),
        _ => {
            problems.push(format!(
                "{what} = {text:?} must be an https:// URL (http:// is accepted only for 127.0.0.1, [::1] and localhost)"
            ));
            None
        }
    }
}

/// SHA-256 of `bytes`: how tokens are kept and secrets compared.
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(text: &str) -> bool {
        let mut problems = Vec::new();
        let url = outbound_url("clients.x.token_endpoint", text, &mut problems);
        assert_eq!(url.is_some(), problems.is_empty(), "{text}: {problems:?}");
        url.is_some()
    }

    #[test]
    fn outbound_urls_are_https_or_http_on_the_three_loopback_names() {
        for text in [
            "https://ehr.example/oauth2/token",
            "http://127.0.0.1:9000/token",
            "http://localhost/token",
            "http://LOCALHOST:8080/token",
            "http://[::1]:9000/",
        ] {
            assert!(allowed(text), "{text}");
        }
        for text in [
            "http://ehr.example/token",
            "http://127.0.0.2/token",
            "http://10.0.0.1/token",
            "ftp://ehr.example/token",
            "https://",
            "ehr.example/token",
            " https://ehr.example/token",
            "",
        ] {
            assert!(!allowed(text), "{text}");
        }
        let mut problems = Vec::new();
        outbound_url(
            "clients.x.token_endpoint",
            "http://ehr.example/t",
            &mut problems,
        );
        assert_eq!(
            problems,
            [
                "clients.x.token_endpoint = \"http://ehr.example/t\" must be an https:// URL \
              (http:// is accepted only for 127.0.0.1, [::1] and localhost)"
            ]
        );
    }

    #[test]
    fn a_config_url_keeps_the_text_as_written_for_claims() {
        let url = ConfigUrl::parse("https://EHR.example:443/oauth2/token").unwrap();
        assert_eq!(url.as_str(), "https://EHR.example:443/oauth2/token");
        assert_eq!(url.url().as_str(), "https://ehr.example/oauth2/token");
        assert_eq!(
            serde_json::to_value(&url).unwrap(),
            "https://EHR.example:443/oauth2/token"
        );
    }
}
