//! What jwksd accepts from the servers it calls: where a discovered token endpoint may
//! point, and how much of an answer it reads.
//!
//! - **URLs** are parsed with the `url` crate (as reqwest parses them), never by hand, so
//!   that the host checked here is the host connected to (`http://2130706433/`,
//!   `http://0x7f.1/` and `http://[::ffff:127.0.0.1]/` are all 127.0.0.1).
//! - **Answers** are read chunk by chunk and abandoned as soon as they pass a limit (at
//!   once when `Content-Length` already says so), so a hostile or broken server cannot
//!   make jwksd buffer more than the limit per request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// Token endpoint answers: a small JSON object (a token, its type, lifetime, scope).
pub const TOKEN_ANSWER_LIMIT: usize = 64 * 1024;
/// SMART configuration documents: a small JSON object (the largest seen live are a few KiB).
pub const DISCOVERY_LIMIT: usize = 64 * 1024;
/// A JWKS fetched by `jwksd doctor`: a few keys with their certificates, well under this.
pub const JWKS_LIMIT: usize = 1024 * 1024;
/// Answers of jwksd's own admin API read by the command-line clients (an audit page of
/// 1000 records is well under 1 MiB).
pub const ADMIN_ANSWER_LIMIT: usize = 16 * 1024 * 1024;

/// An answer that could not be read within its limit.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than {limit} bytes{}; jwksd stopped reading it", declared.map(|n| format!(" (Content-Length: {n})")).unwrap_or_default())]
    TooLarge { limit: usize, declared: Option<u64> },
    #[error("the answer could not be read: {0}")]
    Read(String),
}

/// Reads `response`'s body, at most `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if let Some(length) = declared.filter(|&n| n > limit as u64) {
        return Err(BodyError::TooLarge {
            limit,
            declared: Some(length),
        });
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(super::describe_reqwest_error(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge {
                limit,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether `url`'s host is this machine: 127.0.0.0/8, ::1, the unspecified addresses
/// 0.0.0.0 and `[::]` (connecting to them reaches this host), IPv4-mapped or -compatible
/// forms of those, `localhost` and names under `.localhost` (RFC 6761 §6.3).
pub fn is_loopback(url: &Url) -> bool {
    fn v4(ip: Ipv4Addr) -> bool {
        ip.is_loopback() || ip.is_unspecified()
    }
    fn v6(ip: Ipv6Addr) -> bool {
        ip.is_loopback() || ip.is_unspecified() || ip.to_ipv4().is_some_and(v4)
    }
    // host_str is the host as the url crate normalised it (IPv4 in dotted decimal, IPv6
    // in brackets, names in lower case): the host reqwest connects to.
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => v4(ip),
        Ok(IpAddr::V6(ip)) => v6(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// Checks a token endpoint named by the SMART configuration of `fhir_base_url`: jwksd
/// will post a fresh client assertion there. Returns why it is refused.
///
/// The rule of configured URLs (https, or http only on loopback), and more: a discovery
/// document is data from the network, so it may point at this host (any scheme) only when
/// `fhir_base_url` is itself on this host. Otherwise a discovery document could make jwksd
/// sign and send assertions to its own admin port or other local services.
pub fn check_discovered_endpoint(fhir_base_url: &Url, endpoint: &str) -> Result<Url, String> {
    let url = Url::parse(endpoint).map_err(|e| format!("it is not an absolute URL ({e})"))?;
    let loopback = is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(
                "it must be an https URL (http is accepted only on loopback hosts)".to_owned(),
            )
        }
    }
    if url.host().is_none() {
        return Err("it has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it carries user credentials".to_owned());
    }
    if loopback && !is_loopback(fhir_base_url) {
        return Err(format!(
            "it points at a loopback host ({}) while fhir_base_url is not on loopback; a discovery \
             document may not send assertions to this host's own services",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(url)
}

/// `text` made safe to quote in an answer or a log line: control characters dropped, at
/// most `max` characters (an ellipsis marks the cut).
pub fn bounded(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EHR: &str = "https://fhir.ehr.example/r4/ABC";
    const LOCAL: &str = "http://127.0.0.1:9000/fhir";

    /// Whether `url` parses and is loopback.
    fn is_loopback_str(url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| is_loopback(&u))
    }

    fn check_discovered_endpoint(fhir_base_url: &str, endpoint: &str) -> Result<Url, String> {
        super::check_discovered_endpoint(&Url::parse(fhir_base_url).unwrap(), endpoint)
    }

    #[test]
    fn loopback_hosts_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://127.255.0.1:1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:0.0.0.0]/",
            "http://localhost/",
            "http://LOCALHOST./",
            "https://admin.localhost/",
        ] {
            assert!(is_loopback_str(url), "{url}");
        }
        for url in [
            "https://ehr.example/",
            "https://localhost.ehr.example/",
            "https://128.0.0.1/",
            "http://[::2]/",
            "not a url",
        ] {
            assert!(!is_loopback_str(url), "{url}");
        }
    }

    #[test]
    fn a_discovered_endpoint_follows_the_https_or_loopback_rule() {
        assert!(check_discovered_endpoint(EHR, "https://auth.ehr.example/token").is_ok());
        assert!(check_discovered_endpoint(LOCAL, "http://localhost:9001/token").is_ok());
        assert!(check_discovered_endpoint(LOCAL, "https://auth.ehr.example/token").is_ok());
        for (endpoint, why) in [
            ("http://auth.ehr.example/token", "https"),
            ("ftp://127.0.0.1/token", "https"),
            ("/token", "absolute"),
            ("", "absolute"),
            ("https://u:p@auth.ehr.example/token", "credentials"),
        ] {
            let err = check_discovered_endpoint(EHR, endpoint).unwrap_err();
            assert!(err.contains(why), "{endpoint}: {err}");
        }
    }

    #[test]
    fn only_a_loopback_fhir_base_url_may_discover_a_loopback_endpoint() {
        for endpoint in [
            "http://127.0.0.1:8081/v1/tokens",
            "https://127.0.0.1/token",
            "http://localhost:8081/admin",
            "http://[::ffff:7f00:1]:8081/",
            "http://0.0.0.0:8081/",
        ] {
            let err = check_discovered_endpoint(EHR, endpoint).unwrap_err();
            assert!(err.contains("loopback"), "{endpoint}: {err}");
            assert!(
                check_discovered_endpoint(LOCAL, endpoint).is_ok(),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn quoted_upstream_text_is_bounded() {
        assert_eq!(bounded("abc", 10), "abc");
        assert_eq!(bounded("a\nb\u{7}c", 10), "abc");
        assert_eq!(bounded(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
    }
}
