//! The `[keysets.*]` sections: each key set's algorithm and rotation timing, checked
//! against what verifiers cache (a key is published before it signs, kept after it stops).
//! The `default` key set is there when no key set is configured at all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use std::collections::BTreeSet;

use super::shape::Refused;
use super::values::{parse_duration, show, Flag, IntOrString};
use crate::keys::cert::parse_subject;
use crate::keys::{Algorithm, KeyFamily, RsaBits};
use crate::rotation::{FetchGate, Timing};

/// The name of the key set served at `/.well-known/jwks.json`.
pub const DEFAULT_KEYSET: &str = "default";

/// Shortest `max-age` jwksd will send: a JWKS fetched on every request is an outage
/// waiting to happen (Vault #11438).
const MIN_JWKS_MAX_AGE: Duration = Duration::from_secs(60);
/// An assertion lives at most 300 s; allow 60 s of clock skew on top.
const MIN_RETIRE_GRACE: Duration = Duration::from_secs(360);

/// One key set's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysetConfig {
    pub name: String,
    pub alg: Algorithm,
    pub rsa_bits: RsaBits,
    pub timing: Timing,
    pub cert_subject: String,
    /// `rotation_requires_fetch`, `fetcher_window`, `rotation_deadline`.
    pub fetch_gate: FetchGate,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyset {
    alg: Option<String>,
    rsa_bits: Option<IntOrString>,
    rotation_period: Option<String>,
    jwks_max_age: Option<String>,
    prepublish: Option<String>,
    retire_grace: Option<String>,
    cert_subject: Option<String>,
    rotation_requires_fetch: Option<Flag>,
    fetcher_window: Option<String>,
    rotation_deadline: Option<String>,
}

/// Key set names appear in URLs and file names.
pub fn is_valid_keyset_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Validates every key set; with none configured, there is one: `default`, with the
/// default policy. Returns the valid key sets and the names of all configured ones, valid or
/// not: a client of a key set with a problem has that problem, not a second one.
pub(super) fn validate(
    raw_keysets: BTreeMap<String, RawKeyset>,
    refused: &Refused,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, KeysetConfig>, BTreeSet<String>) {
    // `default` is what /.well-known/jwks.json serves, so a jwksd started with nothing
    // configured publishes something; a file (or variable) that names key sets gets exactly
    // those.
    let mut raw_keysets = raw_keysets;
    if raw_keysets.is_empty() {
        raw_keysets.insert(DEFAULT_KEYSET.into(), RawKeyset::default());
    }
    let mut keysets = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (name, raw) in raw_keysets {
        if !is_valid_keyset_name(&name) {
            problems.push(format!(
                "keysets.{name}: the key set name {name:?} must be 1-63 characters of a-z, 0-9, \
                 '-' or '_', starting with a letter or digit (it becomes part of a URL)"
            ));
            continue;
        }
        names.insert(name.clone());
        if let Some(keyset) = validate_keyset(&name, raw, refused, problems, warnings) {
            keysets.insert(name, keyset);
        }
    }
    (keysets, names)
}

/// With several jwksd on one PostgreSQL database, a change made by one reaches another's JWKS
/// up to `poll_interval` later (when its notification is lost), and a verifier may then cache
/// that replica's older JWKS for `jwks_max_age`: `prepublish` must exceed both together.
/// Key sets whose `prepublish` is already below `jwks_max_age` were refused for that.
pub(super) fn check_replica_timing(
    keysets: &BTreeMap<String, KeysetConfig>,
    poll_interval: Duration,
    problems: &mut Vec<String>,
) {
    for (name, keyset) in keysets {
        let secs = |s: i64| Duration::from_secs(s.max(0) as u64);
        let (max_age, prepublish) = (
            secs(keyset.timing.jwks_max_age),
            secs(keyset.timing.prepublish),
        );
        if prepublish > max_age + poll_interval {
            continue;
        }
        problems.push(format!(
            "keysets.{name}.prepublish = {} does not exceed jwks_max_age = {} plus \
             server.poll_interval = {}: on PostgreSQL a new key reaches the other replicas' JWKS \
             up to poll_interval after it is made, and a verifier may cache a replica's JWKS \
             without it for jwks_max_age after that. Set prepublish to more than {} (e.g. \
             \"{}\"), or shorten jwks_max_age or server.poll_interval",
            show(prepublish),
            show(max_age),
            show(poll_interval),
            show(max_age + poll_interval),
            show(max_age + max_age / 4 + poll_interval)
        ));
    }
}

fn validate_keyset(
    name: &str,
    raw: RawKeyset,
    refused: &Refused,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<KeysetConfig> {
    let before = problems.len();
    let key = |field: &str| format!("keysets.{name}.{field}");
    let gate_raw = RawFetchGate {
        rotation_requires_fetch: raw.rotation_requires_fetch,
        fetcher_window: raw.fetcher_window.clone(),
        rotation_deadline: raw.rotation_deadline.clone(),
    };
    let section = format!("keysets.{name}");
    // A refused value is unusable, not absent: no rule compares the default in its place.
    let usable = |field: &str| !refused.has(&section, field);
    // A key set with a refused value is not valid, though it still counts as configured.
    let any_refused = [
        "alg",
        "rsa_bits",
        "rotation_period",
        "jwks_max_age",
        "prepublish",
        "retire_grace",
        "cert_subject",
    ]
    .iter()
    .any(|field| !usable(field));

    let alg = match raw.alg.as_deref().unwrap_or("RS384").parse::<Algorithm>() {
        Ok(alg) => alg,
        Err(e) => {
            problems.push(format!("{}: {e}", key("alg")));
            Algorithm::Rs384
        }
    };
    let rsa_bits = match raw.rsa_bits {
        None => RsaBits::B2048,
        Some(value) => {
            if matches!(alg.family(), KeyFamily::Ec(_)) {
                warnings.push(format!(
                    "{} is ignored: {alg} keys are EC keys",
                    key("rsa_bits")
                ));
            }
            let bits = match &value {
                IntOrString::Int(i) => Some(*i),
                IntOrString::Text(t) => t.trim().parse().ok(),
            };
            match bits
                .and_then(|b| u64::try_from(b).ok())
                .and_then(RsaBits::from_bits)
            {
                Some(bits) => bits,
                None => {
                    let shown = match value {
                        IntOrString::Int(i) => i.to_string(),
                        IntOrString::Text(t) => format!("{t:?}"),
                    };
                    problems.push(format!(
                        "{} = {shown} is not allowed; use 2048, 3072 or 4096 (below 2048 is refused by \
                         Epic and by NIST)",
                        key("rsa_bits")
                    ));
                    RsaBits::B2048
                }
            }
        }
    };

    let mut duration = |field: &str, default: &str| {
        let text = match field {
            "jwks_max_age" => raw.jwks_max_age.as_deref(),
            "prepublish" => raw.prepublish.as_deref(),
            _ => raw.retire_grace.as_deref(),
        }
        .unwrap_or(default);
        parse_duration(&key(field), text, problems)
    };
    let jwks_max_age = usable("jwks_max_age")
        .then(|| duration("jwks_max_age", "1h"))
        .flatten();
    let prepublish = usable("prepublish")
        .then(|| duration("prepublish", "75m"))
        .flatten();
    let retire_grace = usable("retire_grace")
        .then(|| duration("retire_grace", "24h"))
        .flatten();
    let rotation_period = match raw.rotation_period.as_deref().map(str::trim) {
        _ if !usable("rotation_period") => None,
        Some("off") => None,
        Some(text) => parse_duration(&key("rotation_period"), text, problems),
        None => Some(Duration::from_secs(90 * 86_400)),
    };

    if let Some(max_age) = jwks_max_age {
        if max_age < MIN_JWKS_MAX_AGE {
            problems.push(format!(
                "{} = {} is below 60s; verifiers would refetch the JWKS constantly. Use at least \"60s\" \
                 (minutes to an hour is usual)",
                key("jwks_max_age"),
                show(max_age)
            ));
        }
        if let Some(prepublish) = prepublish {
            if prepublish < max_age {
                problems.push(format!(
                    "{} = {} is shorter than jwks_max_age = {}: a verifier could still hold a cached \
                     JWKS without the new key when it starts signing. Set prepublish to at least \
                     jwks_max_age plus a margin (e.g. \"{}\")",
                    key("prepublish"),
                    show(prepublish),
                    show(max_age),
                    show(max_age + max_age / 4)
                ));
            }
        }
    }
    if let Some(grace) = retire_grace {
        if grace < MIN_RETIRE_GRACE {
            problems.push(format!(
                "{} = {} is too short: an assertion signed just before rotation lives up to 5 minutes, \
                 plus clock skew. Use at least \"6m\" (\"24h\" is comfortable)",
                key("retire_grace"),
                show(grace)
            ));
        }
    }
    if let (Some(period), Some(prepublish)) = (rotation_period, prepublish) {
        if period < prepublish {
            problems.push(format!(
                "{} = {} is shorter than prepublish = {}; a key could never be published long enough \
                 before it signs. Lengthen rotation_period or use \"off\"",
                key("rotation_period"),
                show(period),
                show(prepublish)
            ));
        }
    }

    let fetch_gate = validate_fetch_gate(name, &gate_raw, jwks_max_age, problems);

    let cert_subject = raw.cert_subject.unwrap_or_else(|| format!("CN={name}"));
    if let Err(e) = parse_subject(&cert_subject) {
        problems.push(format!("{}: {e}", key("cert_subject")));
    }

    if problems.len() > before || any_refused {
        return None;
    }
    let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs() as i64);
    Some(KeysetConfig {
        name: name.to_owned(),
        alg,
        rsa_bits,
        timing: Timing {
            rotation_period: rotation_period.map(|d| d.as_secs() as i64),
            jwks_max_age: secs(jwks_max_age),
            prepublish: secs(prepublish),
            retire_grace: secs(retire_grace),
        },
        cert_subject,
        fetch_gate,
    })
}

/// `rotation_requires_fetch`, `fetcher_window` (default 7 days; with the gate on, at least
/// `jwks_max_age`: a fetcher that refetches on schedule must stay in the window between two
/// fetches) and
/// `rotation_deadline` (default 7 days; 0 waits not at all).
/// The fetch gate's keys of a `[keysets.NAME]` section.
struct RawFetchGate {
    rotation_requires_fetch: Option<Flag>,
    fetcher_window: Option<String>,
    rotation_deadline: Option<String>,
}

fn validate_fetch_gate(
    name: &str,
    raw: &RawFetchGate,
    jwks_max_age: Option<Duration>,
    problems: &mut Vec<String>,
) -> FetchGate {
    let key = |field: &str| format!("keysets.{name}.{field}");
    let defaults = FetchGate::default();
    let requires_fetch = raw
        .rotation_requires_fetch
        .map_or(defaults.requires_fetch, |flag| flag.0);
    let secs = |field: &str, text: &Option<String>, default: i64, problems: &mut Vec<String>| {
        text.as_deref()
            .and_then(|t| parse_duration(&key(field), t, problems))
            .map_or(default, |d| d.as_secs() as i64)
    };
    let fetcher_window = secs(
        "fetcher_window",
        &raw.fetcher_window,
        defaults.fetcher_window,
        problems,
    );
    let rotation_deadline = secs(
        "rotation_deadline",
        &raw.rotation_deadline,
        defaults.rotation_deadline,
        problems,
    );
    // The window matters only to the gate: with the gate off no rule compares it.
    if let Some(max_age) = jwks_max_age.filter(|_| requires_fetch) {
        let window = Duration::from_secs(fetcher_window.max(0) as u64);
        if window < max_age {
            problems.push(format!(
                "{} = {} is shorter than jwks_max_age = {}: a verifier that refetches only when its \
                 cache expires would fall out of the window between two fetches. Use at least \
                 jwks_max_age (\"7d\" is usual)",
                key("fetcher_window"),
                show(window),
                show(max_age)
            ));
        }
    }
    FetchGate {
        requires_fetch,
        fetcher_window,
        rotation_deadline,
    }
}
