//! Value syntax shared by every section: durations (`"90s"`, `"24h"`, and how they are
//! shown), booleans as people write them (`1`, `yes`, `on`), numbers that may arrive as
//! strings (from the environment), URLs (parsed once, here, with the `url` crate that
//! reqwest connects with), and the digest secrets are compared by. Leaf module: it knows no
//! section.

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

/// The longest duration the configuration accepts: ten years. Every duration is kept as
/// whole seconds in an `i64` and added to the time of day (`now + rotation_period`) or sent
/// as `max-age`; within this bound none of that can overflow.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// `text` as a duration named `what`: humantime's syntax, without months (humantime reads
/// `1M` as 30.44 days beside `1m`, a minute), at most [`MAX_DURATION`]; otherwise a problem.
pub(super) fn parse_duration(
    what: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    // humantime's month units: "M", "month", "months".
    let counts_months = text
        .split(|c: char| !c.is_alphabetic())
        .any(|unit| unit == "M" || unit == "month" || unit == "months");
    if counts_months {
        problems.push(format!(
            "{what} = {text:?} counts months (\"M\", \"month\"), which are 30.44 days, while \
             \"m\" is a minute; write days, e.g. 30d"
        ));
        return None;
    }
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > MAX_DURATION => {
            problems.push(format!(
                "{what} = {text:?} is longer than {} (ten years), the longest duration jwksd \
                 accepts",
                show(MAX_DURATION)
            ));
            None
        }
        Ok(d) => Some(d),
        Err(_) => {
            problems.push(format!(
                "{what} = {text:?} is not a duration; write it like \"90s\", \"15m\", \"24h\" or \"90d\""
            ));
            None
        }
    }
}

/// A duration as people write it in the configuration: whole days, hours, minutes and
/// seconds (`90d`, `1h 15m`, `1h 5s`), milliseconds only below a second (`100ms`). Every
/// result parses back to the same duration. (humantime's own format counts months of
/// 30.44 days: 90 days would read `2months 29days 7h 22m 48s`.)
pub fn show(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return match d.subsec_millis() {
            0 => "0s".to_owned(),
            millis => format!("{millis}ms"),
        };
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    shown.join(" ")
}

/// What [`parse_bool`] accepts, for messages.
pub const BOOLEAN_WORDS: &str = "1/0, true/false, yes/no or on/off";

/// A boolean as people write it: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`, in any
/// case, surrounding spaces ignored. The one reading of booleans: the environment overlay
/// (through [`Flag`]) and the command line's flags (`JWKSD_INIT=1`) both use it.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("not a yes-or-no value; write {BOOLEAN_WORDS}")),
    }
}

/// A boolean configuration value: a TOML boolean, or (from the environment, where every
/// value is a string) any word [`parse_bool`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum BoolOrText {
            Bool(bool),
            Text(String),
        }
        match BoolOrText::deserialize(deserializer) {
            Ok(BoolOrText::Bool(b)) => Ok(Flag(b)),
            Ok(BoolOrText::Text(text)) => parse_bool(&text)
                .map(Flag)
                .map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(format!(
                "wrong type: expected {BOOLEAN_WORDS}"
            ))),
        }
    }
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

    /// Whether the URL carries a user name or password (`user:password@` before the host).
    pub fn has_credentials(&self) -> bool {
        !self.url.username().is_empty() || self.url.password().is_some()
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

/// Whether `text` is a URL that carries a user name or password: such a value is never
/// shown, not even as the place of a problem.
pub(super) fn holds_credentials(text: &str) -> bool {
    ConfigUrl::parse(text.trim()).is_ok_and(|url| url.has_credentials())
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
        // Credentials in the URL would be sent to the EHR, logged by proxies and shown
        // wherever jwksd shows the URL; EHR token endpoints authenticate by the assertion.
        // The refusal shows neither the user name nor the password.
        Ok(url) if url.has_credentials() => {
            problems.push(format!(
                "{what} holds a user name or password (`user:password@` before the host, not \
                 shown here); remove it: jwksd authenticates to the EHR with the signed \
                 assertion, and the URL is shown and logged"
            ));
            None
        }
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
    fn durations_are_shown_as_people_write_them_and_parse_back() {
        for (secs, shown) in [
            (90 * 86_400, "90d"),
            (3600, "1h"),
            (4500, "1h 15m"),
            (3605, "1h 5s"),
            (86_400 + 60, "1d 1m"),
            (59, "59s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(show(d), shown);
            assert_eq!(humantime::parse_duration(shown).unwrap(), d, "{shown}");
        }
        assert_eq!(show(Duration::from_millis(100)), "100ms");
        assert_eq!(show(Duration::ZERO), "0s");
    }

    fn duration(text: &str) -> Result<Duration, Vec<String>> {
        let mut problems = Vec::new();
        let d = parse_duration("keysets.default.jwks_max_age", text, &mut problems);
        assert_eq!(d.is_some(), problems.is_empty(), "{text}: {problems:?}");
        d.ok_or(problems)
    }

    #[test]
    fn durations_longer_than_ten_years_are_refused_saying_the_limit() {
        assert_eq!(duration("3650d"), Ok(Duration::from_secs(3650 * 86_400)));
        assert_eq!(duration("1y"), Ok(Duration::from_secs(31_557_600)));
        for text in ["3650d 1s", "10000000000d", "100000000000d", "522w", "11y"] {
            assert_eq!(
                duration(text),
                Err(vec![format!(
                    "keysets.default.jwks_max_age = {text:?} is longer than 3650d (ten years), \
                     the longest duration jwksd accepts"
                )]),
                "{text}"
            );
        }
    }

    #[test]
    fn months_are_refused_because_m_would_be_a_minute() {
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("5min 100ms"), Ok(Duration::from_millis(300_100)));
        for text in ["1M", "2months", "1 month", "1d 1M"] {
            assert_eq!(
                duration(text),
                Err(vec![format!(
                    "keysets.default.jwks_max_age = {text:?} counts months (\"M\", \"month\"), \
                     which are 30.44 days, while \"m\" is a minute; write days, e.g. 30d"
                )]),
                "{text}"
            );
        }
    }

    #[test]
    fn booleans_are_read_as_people_write_them() {
        for yes in ["1", "true", "TRUE", "yes", "Yes", "on", " ON "] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        for neither in ["", "2", "y", "maybe", "enabled"] {
            let err = parse_bool(neither).unwrap_err();
            assert!(err.contains(BOOLEAN_WORDS), "{err}");
        }
        let flag: Flag = toml::Value::String("yes".into()).try_into().unwrap();
        assert_eq!(flag, Flag(true));
        let flag: Flag = toml::Value::Boolean(false).try_into().unwrap();
        assert_eq!(flag, Flag(false));
        assert!(toml::Value::Integer(1).try_into::<Flag>().is_err());
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
