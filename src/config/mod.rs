//! Configuration: defaults, then a TOML file, then `JWKSD_` environment variables, then
//! validation into a [`Config`] that the rest of jwksd can trust.
//!
//! Environment variables name a path with double underscores:
//! `JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE=30m` sets `keysets.default.jwks_max_age`. A
//! variable ending in `_FILE` reads the value from that file (`JWKSD_SERVER__ADMIN_TOKEN_FILE`),
//! for secrets mounted by an orchestrator. Variables without a double underscore
//! (`JWKSD_CONFIG`, `JWKSD_SERVER`, `JWKSD_ADMIN_TOKEN`, `JWKSD_LOG`) belong to the command
//! line, not to this file. Every problem found is reported at once, each with what to do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

mod clients;
mod report;

pub use clients::{
    is_allowed_outbound_url, Access, CallerConfig, ClientConfig, MAX_ASSERTION_LIFETIME,
    MIN_ASSERTION_LIFETIME,
};

use crate::keys::cert::parse_subject;
use crate::keys::{Algorithm, KeyFamily, RsaBits};
use crate::rotation::Timing;

/// The name of the key set served at `/.well-known/jwks.json`.
pub const DEFAULT_KEYSET: &str = "default";

/// Shortest `max-age` jwksd will send: a JWKS fetched on every request is an outage
/// waiting to happen (Vault #11438).
const MIN_JWKS_MAX_AGE: Duration = Duration::from_secs(60);
/// An assertion lives at most 300 s; allow 60 s of clock skew on top.
const MIN_RETIRE_GRACE: Duration = Duration::from_secs(360);
/// Shortest admin token accepted from the configuration.
const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// Environment variables that are the CLI's, not configuration paths.
const CLI_VARIABLES: &[&str] = &[
    "CONFIG",
    "SERVER",
    "ADMIN_TOKEN",
    "LOG",
    "CALLER_TOKEN",
    "INIT",
];
/// Keys that already name a file; a `_FILE` variable for them sets the path itself.
const PATH_KEYS: &[&str] = &["master_key_file", "admin_token_file", "token_file"];
/// Keys whose values are secrets: never parsed, never shown.
const SECRET_KEYS: &[&str] = &["master_key", "admin_token", "token_sha256"];

/// A secret string (token, key text) that never prints and is wiped on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret elided]")
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub keysets: BTreeMap<String, KeysetConfig>,
    /// Clients and callers: the part that SIGHUP reloads.
    pub access: Access,
    /// The file this configuration was read from, for reloads.
    pub source: Option<PathBuf>,
    /// Things that are allowed but probably wrong; logged at start.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub public_listen: String,
    pub private_listen: String,
    /// Base URL by which the EHR reaches the public listener, without a trailing slash.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub database: Database,
    pub master_key: MasterKeySource,
    pub admin_token: AdminTokenSource,
    /// Create a new store even though the master key is external (`serve --init`).
    pub initialize: bool,
    /// Authenticate a store from before key rows carried MACs (`serve --upgrade-store`).
    pub upgrade_store: bool,
    /// Timeouts and connection caps of both listeners.
    pub limits: HttpLimits,
}

/// How long a client may take and how many may be connected, per listener. These are what
/// keep an unauthenticated client from holding the public listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a connection's first request head, and idle time allowed between
    /// keep-alive requests (private listener; the public one answers one request per
    /// connection, because actix does not time the heads of later requests).
    pub header_timeout: Duration,
    /// Time to send a whole request body, from the end of the headers.
    pub body_timeout: Duration,
    /// Concurrent connections per listener; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Where the keys are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
}

/// Where the master key comes from.
#[derive(Clone, Debug)]
pub enum MasterKeySource {
    /// Given directly (`master_key`, usually through `JWKSD_SERVER__MASTER_KEY[_FILE]`).
    Inline(Secret),
    /// A file the operator named; it must exist.
    File(PathBuf),
    /// The development default `<data_dir>/master.key`, created on first start.
    Development(PathBuf),
}

/// Where the admin token comes from.
#[derive(Clone, Debug)]
pub enum AdminTokenSource {
    Inline(Secret),
    File(PathBuf),
    /// `<data_dir>/admin.token`, generated on first start.
    Generated(PathBuf),
}

/// One key set's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysetConfig {
    pub name: String,
    pub alg: Algorithm,
    pub rsa_bits: RsaBits,
    pub timing: Timing,
    pub cert_subject: String,
}

/// The configuration could not be used. Holds every problem found, each a sentence that
/// says what to change.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration is not valid:")?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn hiding_file_contents(problems: Vec<String>, sources: &[EnvSource]) -> Self {
        ConfigError {
            problems: hide_file_contents(problems, sources),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    keysets: BTreeMap<String, RawKeyset>,
    #[serde(default)]
    clients: BTreeMap<String, clients::RawClient>,
    #[serde(default)]
    callers: BTreeMap<String, clients::RawCaller>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    public_listen: Option<String>,
    private_listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    master_key: Option<String>,
    master_key_file: Option<PathBuf>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<IntOrString>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeyset {
    alg: Option<String>,
    rsa_bits: Option<IntOrString>,
    rotation_period: Option<String>,
    jwks_max_age: Option<String>,
    prepublish: Option<String>,
    retire_grace: Option<String>,
    cert_subject: Option<String>,
}

/// Numbers from the environment arrive as strings; accept both.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Text(String),
}

impl Config {
    /// Reads the optional TOML file, overlays `env` (pairs of name and value, normally
    /// `std::env::vars()`), and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let (mut table, file_text) = match file {
            None => (toml::Table::new(), None),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(table) => (table, Some(text)),
                    Err(e) => {
                        let origin = path.display().to_string();
                        return Err(ConfigError {
                            problems: vec![report::syntax_error(
                                &origin,
                                &text,
                                e.span(),
                                e.message(),
                            )],
                        });
                    }
                },
                Err(e) => {
                    return Err(ConfigError {
                        problems: vec![format!(
                            "cannot read the configuration file {}: {e}; check --config or JWKSD_CONFIG",
                            path.display()
                        )],
                    })
                }
            },
        };
        let sources = overlay_env(&mut table, env, &mut problems, &mut warnings);
        if !problems.is_empty() {
            return Err(ConfigError::hiding_file_contents(problems, &sources));
        }
        // Deserialise from text, so that an error has a span from which the key is found.
        let merged = toml::to_string(&table).unwrap_or_default();
        let raw = match toml::from_str::<RawConfig>(&merged) {
            Ok(raw) => raw,
            Err(e) => {
                let problem = shape_error(&e, &merged, file, file_text.as_deref(), &sources);
                return Err(ConfigError::hiding_file_contents(vec![problem], &sources));
            }
        };
        let mut config = validate(raw, &mut problems, warnings);
        config.source = file.map(Path::to_path_buf);
        config.warnings = hide_file_contents(std::mem::take(&mut config.warnings), &sources);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::hiding_file_contents(problems, &sources))
        }
    }

    /// The key set served at `/.well-known/jwks.json`, if configured.
    pub fn default_keyset(&self) -> Option<&KeysetConfig> {
        self.keysets.get(DEFAULT_KEYSET)
    }
}

/// Where an environment variable put a value: for messages that say where it came from.
struct EnvSource {
    /// The configuration path it set (`["server", "public_url"]`).
    path: Vec<String>,
    variable: String,
    /// For a `_FILE` variable: the file and what it held (never shown).
    file: Option<(PathBuf, String)>,
}

impl EnvSource {
    /// `JWKSD_X`, or `JWKSD_X_FILE (file /run/x)`.
    fn origin(&self) -> String {
        match &self.file {
            None => self.variable.clone(),
            Some((path, _)) => format!("{} (file {})", self.variable, path.display()),
        }
    }
}

fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<EnvSource> {
    let mut sources = Vec::new();
    let mut vars: Vec<_> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("JWKSD_"))
        .collect();
    vars.sort();
    let names: std::collections::HashSet<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    for (name, value) in vars {
        if let Some(stem) = name.strip_suffix("_FILE") {
            if names.contains(stem) {
                problems.push(format!("{stem} and {name} are both set; keep one"));
                continue;
            }
        }
        let rest = &name["JWKSD_".len()..];
        if !rest.contains("__") {
            if !CLI_VARIABLES.contains(&rest) {
                warnings.push(format!(
                    "ignoring {name}: configuration variables name a path with double \
                     underscores, like JWKSD_SERVER__PUBLIC_URL"
                ));
            }
            continue;
        }
        let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            problems.push(format!("{name} has an empty path segment"));
            continue;
        }
        let mut source = EnvSource {
            path: Vec::new(),
            variable: name.clone(),
            file: None,
        };
        let mut value = value;
        let last = path.len() - 1;
        if path[last].ends_with("_file") && !PATH_KEYS.contains(&path[last].as_str()) {
            // The error names the variable, the path and why (e.g. not UTF-8); never the
            // content, which may be a secret.
            match std::fs::read_to_string(&value) {
                Ok(content) => {
                    let file =
                        PathBuf::from(std::mem::replace(&mut value, content.trim().to_owned()));
                    source.file = Some((file, value.clone()));
                    let stem_len = path[last].len() - "_file".len();
                    path[last].truncate(stem_len);
                }
                Err(e) => {
                    problems.push(format!(
                        "{name}: cannot read {value}: {e}; name a readable UTF-8 text file"
                    ));
                    continue;
                }
            }
        }
        source.path = path.clone();
        // Only lists are written as TOML; a secret is taken exactly as given, even if it
        // happens to start with `[`.
        let is_secret = SECRET_KEYS.contains(&path[path.len() - 1].as_str());
        let parsed = if value.trim_start().starts_with('[') && !is_secret {
            let text = format!("v = {value}");
            match text.parse::<toml::Table>() {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value)),
                Err(e) => {
                    let at = e.span().map_or(String::new(), |span| {
                        let (_, column) = report::position(&text, span.start);
                        format!(" at column {}", column.saturating_sub("v = ".len()))
                    });
                    problems.push(format!(
                        "{} looks like a list but is not valid TOML{at}: {}; write it like \
                         [\"a\", \"b\"] (the value is not shown, it may hold a secret)",
                        source.origin(),
                        report::safe_message(e.message(), &value)
                    ));
                    continue;
                }
            }
        } else {
            toml::Value::String(value)
        };
        if let Err(e) = set_path(table, &path, parsed) {
            problems.push(format!("{name}: {e}"));
        }
        sources.push(source);
    }
    sources
}

/// Describes a configuration that is valid TOML but not of jwksd's shape (an unknown key,
/// a number where a string belongs): where it is (the variable that set it, or the file's
/// line and column), the key, and what is wrong, without the value.
fn shape_error(
    e: &toml::de::Error,
    merged: &str,
    file: Option<&Path>,
    file_text: Option<&str>,
    sources: &[EnvSource],
) -> String {
    let key = e.span().and_then(|span| report::key_at(merged, span.start));
    let is_secret = key
        .as_deref()
        .and_then(|k| k.rsplit('.').next())
        .is_some_and(|last| SECRET_KEYS.contains(&last));
    let what = if is_secret {
        "wrong type; write it as a quoted string".to_owned()
    } else {
        report::safe_message(e.message(), &report::values_of(merged))
    };
    let from_env = key.as_deref().and_then(|key| {
        sources.iter().rev().find(|s| {
            let path = s.path.join(".");
            key == path || key.starts_with(&format!("{path}."))
        })
    });
    let origin = match (from_env, file, file_text) {
        (Some(source), _, _) => source.origin(),
        (None, Some(path), Some(text)) => match toml::from_str::<RawConfig>(text) {
            // The same error in the file alone: its span is a position in the file.
            Err(in_file) if in_file.message() == e.message() => match in_file.span() {
                Some(span) => {
                    let (line, column) = report::position(text, span.start);
                    format!("{}: line {line}, column {column}", path.display())
                }
                None => path.display().to_string(),
            },
            _ => path.display().to_string(),
        },
        _ => "the configuration".to_owned(),
    };
    match key {
        Some(key) => format!("{origin}: {key}: {what}"),
        None => format!("{origin}: {what}"),
    }
}

/// Replaces, in each message, what a `_FILE` variable's file held by a reference to the
/// file; a message that still shares a run of characters with such content is replaced
/// as a whole.
fn hide_file_contents(messages: Vec<String>, sources: &[EnvSource]) -> Vec<String> {
    messages
        .into_iter()
        .map(|mut message| {
            for source in sources {
                let Some((path, content)) = &source.file else {
                    continue;
                };
                if content.is_empty() {
                    continue;
                }
                let reference = format!(
                    "(the content of {}, from {})",
                    path.display(),
                    source.variable
                );
                let trimmed = content.trim_end_matches('/');
                for shown in [format!("{content:?}"), format!("{trimmed:?}")] {
                    message = message.replace(&shown, &reference);
                }
                if content.chars().count() >= 8 {
                    message = message.replace(content.as_str(), &reference);
                }
                if report::echoes(&message, content) {
                    message = format!(
                        "{}: the content is not a valid {} (not shown, it may be a secret)",
                        source.origin(),
                        source.path.join(".")
                    );
                }
            }
            message
        })
        .collect()
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty path")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is a value in the file, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn parse_duration(what: &str, text: &str, problems: &mut Vec<String>) -> Option<Duration> {
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

/// `server.header_timeout`, `server.body_timeout`, `server.max_connections`.
fn validate_limits(
    header_timeout: &Option<String>,
    body_timeout: &Option<String>,
    max_connections: &Option<IntOrString>,
    problems: &mut Vec<String>,
) -> HttpLimits {
    let defaults = HttpLimits::default();
    let mut timeout = |what: &str, text: &Option<String>, default: Duration| {
        let Some(text) = text else { return default };
        match parse_duration(what, text, problems) {
            Some(d) if (Duration::from_millis(100)..=Duration::from_secs(300)).contains(&d) => d,
            Some(_) => {
                problems.push(format!("{what} = {text:?} must be between 100ms and 5m"));
                default
            }
            None => default,
        }
    };
    let header_timeout = timeout(
        "server.header_timeout",
        header_timeout,
        defaults.header_timeout,
    );
    let body_timeout = timeout("server.body_timeout", body_timeout, defaults.body_timeout);
    let max_connections = match max_connections {
        None => defaults.max_connections,
        Some(value) => {
            let parsed = match value {
                IntOrString::Int(n) => Some(*n),
                IntOrString::Text(t) => t.trim().parse().ok(),
            };
            match parsed {
                Some(n) if (8..=65_536).contains(&n) => n as usize,
                _ => {
                    problems.push(
                        "server.max_connections must be a whole number from 8 to 65536".into(),
                    );
                    defaults.max_connections
                }
            }
        }
    };
    HttpLimits {
        header_timeout,
        body_timeout,
        max_connections,
    }
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn check_listen(what: &str, addr: &str, problems: &mut Vec<String>) {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        problems.push(format!(
            "server.{what} = {addr:?} is not HOST:PORT; for example \"127.0.0.1:8080\" or \"0.0.0.0:8080\""
        ));
    }
}

fn is_loopback_url(url: &str) -> bool {
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

fn validate(raw: RawConfig, problems: &mut Vec<String>, mut warnings: Vec<String>) -> Config {
    let s = raw.server;
    let public_listen = s.public_listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let private_listen = s.private_listen.unwrap_or_else(|| "127.0.0.1:8081".into());
    check_listen("public_listen", &public_listen, problems);
    check_listen("private_listen", &private_listen, problems);
    if public_listen == private_listen && !public_listen.ends_with(":0") {
        problems.push(format!(
            "server.public_listen and server.private_listen are both {public_listen}; the admin \
             API must not share the public port, give them different ports"
        ));
    }

    let public_url = match s
        .public_url
        .map(|u| u.trim().trim_end_matches('/').to_owned())
    {
        None => None,
        Some(u) if u.is_empty() => None,
        Some(u) if u.starts_with("https://") => Some(u),
        Some(u) if u.starts_with("http://") => {
            if !is_loopback_url(&u) {
                warnings.push(format!(
                    "server.public_url = {u:?} is plain http; EHRs fetch JWKS URLs only over https"
                ));
            }
            Some(u)
        }
        Some(u) => {
            problems.push(format!(
                "server.public_url = {u:?} must start with https:// (the address the EHR fetches the JWKS from)"
            ));
            None
        }
    };

    let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    let database_url = s.database_url.unwrap_or_default();
    let database = if database_url.trim().is_empty() {
        Database::Sqlite(data_dir.join("jwksd.db"))
    } else if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        Database::Sqlite(PathBuf::from(path))
    } else {
        if database_url.starts_with("postgres") {
            problems.push(
                "server.database_url: this build of jwksd has only the embedded SQLite store; \
                 leave database_url empty (PostgreSQL support is on the roadmap)"
                    .into(),
            );
        } else {
            problems.push(
                "server.database_url must be empty (SQLite in data_dir) or sqlite://PATH".into(),
            );
        }
        Database::Sqlite(data_dir.join("jwksd.db"))
    };

    let master_key = match (s.master_key, s.master_key_file) {
        (Some(_), Some(_)) => {
            problems
                .push("server.master_key and server.master_key_file are both set; keep one".into());
            MasterKeySource::Development(data_dir.join("master.key"))
        }
        (Some(text), None) => MasterKeySource::Inline(Secret::new(text)),
        (None, Some(path)) if !path.as_os_str().is_empty() => MasterKeySource::File(path),
        (None, _) => MasterKeySource::Development(data_dir.join("master.key")),
    };

    let admin_token = match (s.admin_token, s.admin_token_file) {
        (Some(_), Some(_)) => {
            problems.push(
                "server.admin_token and server.admin_token_file are both set; keep one".into(),
            );
            AdminTokenSource::Generated(data_dir.join("admin.token"))
        }
        (Some(token), None) if !token.is_empty() => {
            if token.trim().len() < MIN_ADMIN_TOKEN_LEN {
                problems.push(format!(
                    "server.admin_token is {} characters; use at least {MIN_ADMIN_TOKEN_LEN} random \
                     characters (`jwksd callers new-token` prints one)",
                    token.trim().len()
                ));
            }
            AdminTokenSource::Inline(Secret::new(token.trim().to_owned()))
        }
        (None, Some(path)) if !path.as_os_str().is_empty() => AdminTokenSource::File(path),
        _ => AdminTokenSource::Generated(data_dir.join("admin.token")),
    };

    let limits = validate_limits(
        &s.header_timeout,
        &s.body_timeout,
        &s.max_connections,
        problems,
    );

    // `default` always exists: it is what /.well-known/jwks.json serves, and a key set
    // added by one environment variable must not silently unpublish it.
    let mut raw_keysets = raw.keysets;
    raw_keysets.entry(DEFAULT_KEYSET.into()).or_default();
    let mut keysets = BTreeMap::new();
    for (name, raw) in raw_keysets {
        if !is_valid_keyset_name(&name) {
            problems.push(format!(
                "key set name {name:?} must be 1-63 characters of a-z, 0-9, '-' or '_', starting \
                 with a letter or digit (it becomes part of a URL)"
            ));
            continue;
        }
        if let Some(keyset) = validate_keyset(&name, raw, problems, &mut warnings) {
            keysets.insert(name, keyset);
        }
    }
    let access =
        clients::validate_access(raw.clients, raw.callers, &keysets, problems, &mut warnings);

    Config {
        server: ServerConfig {
            public_listen,
            private_listen,
            public_url,
            data_dir,
            database,
            master_key,
            admin_token,
            initialize: false,
            upgrade_store: false,
            limits,
        },
        keysets,
        access,
        source: None,
        warnings,
    }
}

fn validate_keyset(
    name: &str,
    raw: RawKeyset,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<KeysetConfig> {
    let before = problems.len();
    let key = |field: &str| format!("keysets.{name}.{field}");

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
    let jwks_max_age = duration("jwks_max_age", "1h");
    let prepublish = duration("prepublish", "75m");
    let retire_grace = duration("retire_grace", "24h");
    let rotation_period = match raw.rotation_period.as_deref().map(str::trim) {
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

    let cert_subject = raw.cert_subject.unwrap_or_else(|| format!("CN={name}"));
    if let Err(e) = parse_subject(&cert_subject) {
        problems.push(format!("{}: {e}", key("cert_subject")));
    }

    if problems.len() > before {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwksd.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env)
    }

    fn problems(toml: &str, env: &[(&str, &str)]) -> String {
        load(toml, env).unwrap_err().to_string()
    }

    #[test]
    fn no_configuration_at_all_gives_a_usable_default_key_set() {
        let config = Config::load(None, Vec::new()).unwrap();
        let keyset = config.default_keyset().unwrap();
        assert_eq!(keyset.alg, Algorithm::Rs384);
        assert_eq!(keyset.rsa_bits, RsaBits::B2048);
        assert_eq!(keyset.timing.jwks_max_age, 3600);
        assert_eq!(keyset.timing.prepublish, 75 * 60);
        assert_eq!(keyset.timing.retire_grace, 86_400);
        assert_eq!(keyset.timing.rotation_period, Some(90 * 86_400));
        assert_eq!(keyset.cert_subject, "CN=default");
        assert_eq!(config.server.public_listen, "127.0.0.1:8080");
        assert_eq!(
            config.server.database,
            Database::Sqlite("data/jwksd.db".into())
        );
    }

    #[test]
    fn environment_overrides_the_file_with_double_underscore_paths() {
        let config = load(
            "[keysets.default]\njwks_max_age = \"30m\"\nprepublish = \"40m\"\n",
            &[
                ("JWKSD_KEYSETS__DEFAULT__JWKS_MAX_AGE", "10m"),
                ("JWKSD_KEYSETS__DEFAULT__RSA_BITS", "3072"),
                ("JWKSD_SERVER__PUBLIC_LISTEN", "0.0.0.0:9000"),
                ("JWKSD_SERVER", "http://127.0.0.1:8081"),
            ],
        )
        .unwrap();
        let keyset = config.default_keyset().unwrap();
        assert_eq!(keyset.timing.jwks_max_age, 600);
        assert_eq!(keyset.timing.prepublish, 2400);
        assert_eq!(keyset.rsa_bits, RsaBits::B3072);
        assert_eq!(config.server.public_listen, "0.0.0.0:9000");
    }

    #[test]
    fn file_suffix_reads_secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "t".repeat(40) + "\n").unwrap();
        let config = load(
            "",
            &[(
                "JWKSD_SERVER__ADMIN_TOKEN_FILE",
                token_path.to_str().unwrap(),
            )],
        )
        .unwrap();
        match config.server.admin_token {
            AdminTokenSource::File(path) => assert_eq!(path, token_path),
            other => panic!("{other:?}"),
        }
        let config = load(
            "",
            &[(
                "JWKSD_SERVER__MASTER_KEY_FILE",
                token_path.to_str().unwrap(),
            )],
        )
        .unwrap();
        assert!(matches!(config.server.master_key, MasterKeySource::File(_)));
        let err = problems("", &[("JWKSD_SERVER__PUBLIC_URL_FILE", "/nonexistent/x")]);
        assert!(err.contains("cannot read /nonexistent/x"), "{err}");
    }

    #[test]
    fn prepublish_shorter_than_max_age_is_refused_with_advice() {
        let err = problems(
            "[keysets.default]\njwks_max_age = \"1h\"\nprepublish = \"30m\"\n",
            &[],
        );
        assert!(
            err.contains("prepublish = 30m is shorter than jwks_max_age = 1h"),
            "{err}"
        );
        assert!(err.contains("at least"), "{err}");
    }

    #[test]
    fn weak_or_unknown_key_parameters_are_refused() {
        let err = problems("[keysets.default]\nrsa_bits = 1024\nalg = \"HS256\"\n", &[]);
        assert!(err.contains("rsa_bits = 1024 is not allowed"), "{err}");
        assert!(err.contains("unknown algorithm \"HS256\""), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = problems(
            "[server]\npublic_url = \"ftp://x\"\n[keysets.default]\njwks_max_age = \"10s\"\nretire_grace = \"1m\"\nrotation_period = \"soon\"\n",
            &[],
        );
        for needle in ["public_url", "below 60s", "retire_grace", "not a duration"] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        assert!(
            problems("[server]\npublik_url = \"x\"\n", &[]).contains("unknown field `publik_url`")
        );
        assert!(problems("[keysets.\"../etc\"]\n", &[]).contains("must be 1-63 characters"));
    }

    #[test]
    fn rotation_can_be_turned_off_and_default_always_exists() {
        let config = load(
            "[keysets.epic-prod]\nalg = \"ES384\"\nrotation_period = \"off\"\n",
            &[],
        )
        .unwrap();
        let keyset = &config.keysets["epic-prod"];
        assert_eq!(keyset.timing.rotation_period, None);
        assert_eq!(keyset.alg, Algorithm::Es384);
        assert!(
            config.default_keyset().is_some(),
            "a key set added elsewhere keeps default"
        );
        let from_env = load("", &[("JWKSD_KEYSETS__EPIC__ALG", "ES384")]).unwrap();
        assert_eq!(
            from_env.keysets.keys().collect::<Vec<_>>(),
            ["default", "epic"]
        );
    }

    #[test]
    fn type_errors_point_at_the_key_but_never_echo_a_secret() {
        let err = problems("[keysets.default]\nprepublish = 4500\n", &[]);
        assert!(
            err.contains("jwksd.toml: line 2, column 14: keysets.default.prepublish")
                && err.contains("expected a string, found an integer"),
            "{err}"
        );
        let err = problems("", &[("JWKSD_CALLERS__SYNC__CLIENTS", "[1]")]);
        assert!(
            err.contains("JWKSD_CALLERS__SYNC__CLIENTS: callers.sync.clients"),
            "{err}"
        );
        let err = problems("[server]\nadmin_token = 918273645546372819\n", &[]);
        assert!(!err.contains("918273645546372819"), "{err}");
        assert!(err.contains("wrong type"), "{err}");
    }

    #[test]
    fn a_variable_and_its_file_form_together_are_refused() {
        let err = problems(
            "",
            &[
                ("JWKSD_SERVER__ADMIN_TOKEN", "x"),
                ("JWKSD_SERVER__ADMIN_TOKEN_FILE", "/tmp/x"),
            ],
        );
        assert!(err.contains("both set"), "{err}");
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let err = problems("[server]\nadmin_token = \"hunter2\"\n", &[]);
        assert!(err.contains("use at least 32"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "a secret must not be echoed: {err}"
        );
    }

    const SECRET: &str = "s3cr3t-very-long-token-value-0123456789abcdef";

    /// Asserts that `err` names no part of `SECRET` (not even a long fragment of it).
    fn assert_no_secret(err: &str) {
        for window in SECRET.as_bytes().windows(8) {
            let fragment = std::str::from_utf8(window).unwrap();
            assert!(
                !err.contains(fragment),
                "{fragment:?} of the secret is echoed: {err}"
            );
        }
    }

    #[test]
    fn an_unterminated_secret_is_reported_by_position_without_its_text() {
        let err = problems(
            &format!("[server]\npublic_listen = \"127.0.0.1:8080\"\nadmin_token = \"{SECRET}\n"),
            &[],
        );
        assert_no_secret(&err);
        assert!(err.contains("jwksd.toml"), "names the file: {err}");
        assert!(err.contains("line 3, column"), "names the position: {err}");
        assert!(err.contains("server.admin_token"), "names the key: {err}");
        let err = problems(&format!("[server]\nadmin_token = '{SECRET}\n"), &[]);
        assert_no_secret(&err);
        assert!(err.contains("line 2, column"), "{err}");
        let err = problems(&format!("[server]\nadmin_token = \"\"\"{SECRET}\n"), &[]);
        assert_no_secret(&err);
    }

    #[test]
    fn an_invalid_escape_inside_a_secret_is_reported_without_its_text() {
        let (head, tail) = SECRET.split_at(20);
        for escape in ["\\q", "\\uZZZZ", "\\U0011FFFF", "\\x41"] {
            let err = problems(
                &format!("[server]\nadmin_token = \"{head}{escape}{tail}\"\n"),
                &[],
            );
            assert_no_secret(&err);
            assert!(err.contains("line 2, column"), "{escape}: {err}");
            assert!(err.contains("server.admin_token"), "{escape}: {err}");
        }
        // A control character (a raw tab is fine, a raw NUL is not) inside the secret.
        let err = problems(
            &format!("[server]\nadmin_token = \"{head}\u{1}{tail}\"\n"),
            &[],
        );
        assert_no_secret(&err);
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_misplaced_or_mistyped_secret_is_never_echoed() {
        // A typo in the key: the unknown field is named, its value is not.
        let err = problems(&format!("[server]\nadmin_tokn = \"{SECRET}\"\n"), &[]);
        assert_no_secret(&err);
        assert!(err.contains("admin_tokn"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        // A string where a section belongs (from the environment).
        let err = problems("", &[("JWKSD_CLIENTS__ECW", SECRET)]);
        assert_no_secret(&err);
        assert!(err.contains("clients.ecw"), "{err}");
        // An environment value that looks like TOML but is not: not echoed either.
        let err = problems("", &[("JWKSD_SERVER__PUBLIC_URL", &format!("[\"{SECRET}"))]);
        assert_no_secret(&err);
        assert!(err.contains("JWKSD_SERVER__PUBLIC_URL"), "{err}");
        // A secret from the environment is taken as it is, never parsed as TOML.
        let bracketed = format!("[{SECRET}");
        let config = load("", &[("JWKSD_SERVER__ADMIN_TOKEN", &bracketed)]).unwrap();
        match config.server.admin_token {
            AdminTokenSource::Inline(token) => assert_eq!(token.expose(), bracketed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_file_variable_names_the_variable_and_path_but_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let bad_utf8 = dir.path().join("latin1");
        std::fs::write(&bad_utf8, b"s3cr3t-very-long\xff-token-value").unwrap();
        let err = problems(
            "",
            &[("JWKSD_SERVER__PUBLIC_URL_FILE", bad_utf8.to_str().unwrap())],
        );
        assert!(err.contains("JWKSD_SERVER__PUBLIC_URL_FILE"), "{err}");
        assert!(err.contains(bad_utf8.to_str().unwrap()), "{err}");
        assert!(err.contains("UTF-8"), "says why: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");

        let wrong = dir.path().join("wrong");
        for (variable, content) in [
            ("JWKSD_SERVER__PUBLIC_URL_FILE", format!("ftp://{SECRET}")),
            ("JWKSD_KEYSETS__DEFAULT__RSA_BITS_FILE", SECRET.to_owned()),
            ("JWKSD_KEYSETS__DEFAULT__PREPUBLISH_FILE", SECRET.to_owned()),
            ("JWKSD_CLIENTS__ECW__AUDIENCES_FILE", format!("[\"{SECRET}")),
            ("JWKSD_CLIENTS__ECW_FILE", SECRET.to_owned()),
        ] {
            std::fs::write(&wrong, format!("{content}\n")).unwrap();
            let err = problems("", &[(variable, wrong.to_str().unwrap())]);
            assert_no_secret(&err);
            assert!(err.contains(variable), "{variable}: {err}");
            assert!(err.contains(wrong.to_str().unwrap()), "{variable}: {err}");
        }
    }
}
