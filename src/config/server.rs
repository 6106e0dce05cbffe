//! The `[server]` section: listeners, the public URL, where the store, the master key and
//! the admin token are, and the HTTP limits. None of it changes without a restart.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{is_loopback_url, parse_duration, IntOrString};
use super::Secret;

/// Shortest admin token accepted from the configuration.
const MIN_ADMIN_TOKEN_LEN: usize = 32;

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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

/// Validates the `[server]` section; every problem is added to `problems`.
pub(super) fn validate(
    s: RawServer,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> ServerConfig {
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

    ServerConfig {
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
