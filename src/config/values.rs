//! Value syntax shared by every section: durations (`"90s"`, `"24h"`), numbers that may
//! arrive as strings (from the environment), and how a duration is shown back in a message.
//! Leaf module: it knows no section.

use std::time::Duration;

use serde::Deserialize;

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

pub(super) fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}
