//! The `[server]` section: listeners, the public URL, where the store, the master key and
//! the admin token are, and the HTTP limits. None of it changes without a restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::shape::Refused;
use crate::logging::LogFormat;

use super::values::{has_http_scheme, parse_duration, sha256, ConfigUrl, IntOrString};

/// Shortest admin token accepted from the configuration.
const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The validated `[server]` section.
///
/// `PartialEq` compares everything, the start-up options included; a reload asks
/// [`ServerConfig::changed_keys`], which compares only what the configuration sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub public_listen: String,
    pub private_listen: String,
    /// Base URL by which the EHR reaches the public listener, without a trailing slash.
    pub public_url: Option<ConfigUrl>,
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
    /// On PostgreSQL, how often this jwksd re-reads the keys from the database: the bound on
    /// how long another replica's change takes to reach this one's JWKS when a notification
    /// is lost. Unused on SQLite (one jwksd per store).
    pub poll_interval: Duration,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies, load balancers); from any
    /// other peer the header is ignored. Empty: the TCP peer is always the source.
    pub trusted_proxies: Vec<IpNetwork>,
    /// How log lines are written (`server.log_format`); read once at start.
    pub log_format: LogFormat,
    /// HTTPS on the public listener (`tls_cert_file`, `tls_key_file`); `None`: plain HTTP.
    pub public_tls: Option<TlsFiles>,
    /// HTTPS on the private listener (`private_tls_cert_file`, `private_tls_key_file`).
    pub private_tls: Option<TlsFiles>,
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is its own
/// /32 or /128), for `server.trusted_proxies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Parses `a.b.c.d/n`, `x:y::/n` or a bare address; host bits are ignored.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
        };
        Some(IpNetwork { addr, prefix })
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, as a
    /// dual-stack listener reports an IPv4 peer) is compared as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The certificate and key files of one listener's HTTPS, as the configuration names them.
/// The files are read (and re-read when they change) by `tls`; here they are only paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the end-entity certificate first, then the intermediates (the full chain).
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
    /// The configuration keys that name the two files (`server.tls_cert_file`,
    /// `server.tls_key_file`), for messages.
    pub cert_key_name: &'static str,
    pub key_key_name: &'static str,
    /// The listener the files serve (`public`, `private`), for messages and the label of
    /// the certificate's expiry metric.
    pub listener: &'static str,
}

/// The default of `server.poll_interval`.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

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
    /// `postgres://` or `postgresql://`, as libpq spells it (`sslmode` and all).
    Postgres(DatabaseUrl),
}

/// A PostgreSQL URL. It may carry a password, so `Debug` and [`DatabaseUrl::redacted`]
/// show it as `***`; only [`DatabaseUrl::expose`] gives the URL itself, to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: String) -> Self {
        DatabaseUrl(url)
    }

    /// The URL with its password, for the connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        let mut url = match url::Url::parse(&self.0) {
            Ok(url) => url,
            Err(_) => return "(an unparsable URL)".into(),
        };
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

/// Where the master key comes from.
#[derive(Clone, Debug)]
pub enum MasterKeySource {
    /// Given directly (`master_key`, usually through `JWKSD_SERVER__MASTER_KEY[_FILE]`);
    /// exposed only where it is parsed into a key.
    Inline(SecretString),
    /// A file the operator named; it must exist.
    File(PathBuf),
    /// The development default `<data_dir>/master.key`, created on first start.
    Development(PathBuf),
}

/// Two inline keys are compared in constant time, like any secret.
impl PartialEq for MasterKeySource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MasterKeySource::Inline(a), MasterKeySource::Inline(b)) => a
                .expose_secret()
                .as_bytes()
                .ct_eq(b.expose_secret().as_bytes())
                .into(),
            (MasterKeySource::File(a), MasterKeySource::File(b))
            | (MasterKeySource::Development(a), MasterKeySource::Development(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for MasterKeySource {}

/// Where the admin token comes from. A token given in the configuration is kept only as
/// its SHA-256 (what the admin API compares against); one in a file is read by the server
/// at start, which also keeps only its hash, and by the CLI (`cli::client`).
#[derive(Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// SHA-256 of `server.admin_token` (trimmed).
    Inline([u8; 32]),
    File(PathBuf),
    /// `<data_dir>/admin.token`, generated on first start.
    Generated(PathBuf),
}

impl std::fmt::Debug for AdminTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminTokenSource::Inline(_) => f.write_str("Inline([sha-256 elided])"),
            AdminTokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
            AdminTokenSource::Generated(path) => f.debug_tuple("Generated").field(path).finish(),
        }
    }
}

impl AdminTokenSource {
    /// The file the token is read from; `None` when it is given inline.
    pub fn file(&self) -> Option<&Path> {
        match self {
            AdminTokenSource::Inline(_) => None,
            AdminTokenSource::File(path) | AdminTokenSource::Generated(path) => Some(path),
        }
    }
}

/// SHA-256 of the secrets `[server]` points at, as they are at the moment of reading. A
/// reload compares them with those the service started with, so that a rotated admin token
/// or master key is reported even when the file that holds it kept its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretDigests {
    /// `None`: the file could not be read.
    admin_token: Option<[u8; 32]>,
    master_key: Option<[u8; 32]>,
}

impl SecretDigests {
    /// Which secrets differ (`server.admin_token`, `server.master_key`).
    pub fn changed_keys(&self, now: &SecretDigests) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.admin_token != now.admin_token {
            changed.push("server.admin_token");
        }
        if self.master_key != now.master_key {
            changed.push("server.master_key");
        }
        changed
    }
}

impl ServerConfig {
    /// The keys (`server.public_listen`, ...) whose values differ from `other`'s, for a
    /// reload's "needs a restart" report. The start-up options (`initialize`,
    /// `upgrade_store`) are the command line's, not the configuration's, and are not
    /// compared: a reload after `serve --init` changes nothing.
    pub fn changed_keys(&self, other: &ServerConfig) -> Vec<&'static str> {
        // Destructured, so that a new field cannot be forgotten here.
        let ServerConfig {
            public_listen,
            private_listen,
            public_url,
            data_dir,
            database,
            master_key,
            admin_token,
            initialize: _,
            upgrade_store: _,
            poll_interval,
            trusted_proxies,
            log_format,
            public_tls,
            private_tls,
            limits:
                HttpLimits {
                    header_timeout,
                    body_timeout,
                    max_connections,
                },
        } = self;
        let mut changed = Vec::new();
        let mut compare = |key: &'static str, same: bool| {
            if !same {
                changed.push(key);
            }
        };
        compare(
            "server.public_listen",
            *public_listen == other.public_listen,
        );
        compare(
            "server.private_listen",
            *private_listen == other.private_listen,
        );
        compare("server.public_url", *public_url == other.public_url);
        compare("server.data_dir", *data_dir == other.data_dir);
        compare("server.database_url", *database == other.database);
        compare("server.master_key", *master_key == other.master_key);
        compare("server.admin_token", *admin_token == other.admin_token);
        compare(
            "server.header_timeout",
            *header_timeout == other.limits.header_timeout,
        );
        compare(
            "server.body_timeout",
            *body_timeout == other.limits.body_timeout,
        );
        compare(
            "server.max_connections",
            *max_connections == other.limits.max_connections,
        );
        compare(
            "server.poll_interval",
            *poll_interval == other.poll_interval,
        );
        compare(
            "server.trusted_proxies",
            *trusted_proxies == other.trusted_proxies,
        );
        compare("server.log_format", *log_format == other.log_format);
        // Only which files: a changed file's content is reloaded without a restart.
        compare("server.tls_cert_file", *public_tls == other.public_tls);
        compare(
            "server.private_tls_cert_file",
            *private_tls == other.private_tls,
        );
        changed
    }

    /// Reads the secrets this configuration points at and digests them.
    pub fn secret_digests(&self) -> SecretDigests {
        let digest_file = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| sha256(zeroize::Zeroizing::new(text).trim().as_bytes()))
        };
        let admin_token = match &self.admin_token {
            AdminTokenSource::Inline(hash) => Some(*hash),
            AdminTokenSource::File(path) | AdminTokenSource::Generated(path) => digest_file(path),
        };
        let master_key = match &self.master_key {
            MasterKeySource::Inline(text) => Some(sha256(text.expose_secret().trim().as_bytes())),
            MasterKeySource::File(path) | MasterKeySource::Development(path) => digest_file(path),
        };
        SecretDigests {
            admin_token,
            master_key,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    public_listen: Option<String>,
    private_listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    master_key: Option<SecretString>,
    master_key_file: Option<PathBuf>,
    admin_token: Option<SecretString>,
    admin_token_file: Option<PathBuf>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<IntOrString>,
    poll_interval: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    log_format: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    private_tls_cert_file: Option<PathBuf>,
    private_tls_key_file: Option<PathBuf>,
}

/// Refuses what an http(s) `server.public_url` must not carry; whether it found any. The
/// user name and password are never shown.
fn public_url_problems(url: &ConfigUrl, problems: &mut Vec<String>) -> bool {
    let before = problems.len();
    if url.has_credentials() {
        problems.push(
            "server.public_url holds a user name or password (`user:password@` before the host, \
             not shown here); remove it: EHRs fetch the JWKS without credentials, and the URL is \
             given to every EHR and shown and logged"
                .to_owned(),
        );
    }
    if let Some(query) = url.url().query() {
        problems.push(format!(
            "server.public_url has a query (`?{query}`); remove it: jwksd appends the JWKS and \
             certificate paths to public_url (/jwks/NAME.json), so the query would break every \
             URL given to EHRs. A path prefix (https://example.org/jwksd) is fine"
        ));
    }
    if let Some(fragment) = url.url().fragment() {
        problems.push(format!(
            "server.public_url has a fragment (`#{fragment}`); remove it: jwksd appends the JWKS \
             and certificate paths to public_url (/jwks/NAME.json), and a fragment is never sent, \
             so every URL given to EHRs would lose its path"
        ));
    }
    problems.len() > before
}

/// Validates the `[server]` section; every problem is added to `problems`.
pub(super) fn validate(
    s: RawServer,
    refused: &Refused,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> ServerConfig {
    let public_listen = s.public_listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let private_listen = s.private_listen.unwrap_or_else(|| "127.0.0.1:8081".into());
    check_listen("public_listen", &public_listen, problems);
    check_listen("private_listen", &private_listen, problems);
    // A refused listener is not the default: comparing the default would be a knock-on.
    let both_usable =
        !refused.has("server", "public_listen") && !refused.has("server", "private_listen");
    if public_listen == private_listen && !public_listen.ends_with(":0") && both_usable {
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
        Some(u) => match ConfigUrl::parse(&u) {
            // Every JWKS and certificate URL given to EHRs is public_url with a path
            // appended: it can carry no credentials, query or fragment.
            Ok(url)
                if matches!(url.url().scheme(), "https" | "http")
                    && public_url_problems(&url, problems) =>
            {
                None
            }
            Ok(url) if url.url().scheme() == "https" => Some(url),
            Ok(url) if url.url().scheme() == "http" => {
                if !url.is_loopback() {
                    warnings.push(format!(
                        "server.public_url = {u:?} is plain http; EHRs fetch JWKS URLs only over https"
                    ));
                }
                Some(url)
            }
            // The scheme is right but the rest is not a URL: say so, not "use https".
            Err(e) if has_http_scheme(&u) => {
                problems.push(format!(
                    "server.public_url = {u:?} is not a URL ({e}); write the address the EHR \
                     fetches the JWKS from, like \"https://jwks.example.org\""
                ));
                None
            }
            _ => {
                problems.push(format!(
                    "server.public_url = {u:?} must start with https:// (the address the EHR fetches the JWKS from)"
                ));
                None
            }
        },
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
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        match url::Url::parse(database_url.trim()) {
            Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) || url.query().is_some() => {}
            // Never the text: it may hold the password.
            _ => problems.push(
                "server.database_url is not a usable PostgreSQL URL; write it as \
                 postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full (the password \
                 percent-encoded, or from JWKSD_SERVER__DATABASE_URL_FILE)"
                    .into(),
            ),
        }
        Database::Postgres(DatabaseUrl::new(database_url.trim().to_owned()))
    } else {
        problems.push(
            "server.database_url must be empty (SQLite in data_dir), sqlite://PATH or \
             postgres://USER:PASSWORD@HOST/DATABASE"
                .into(),
        );
        Database::Sqlite(data_dir.join("jwksd.db"))
    };

    let master_key = match (s.master_key, s.master_key_file) {
        (Some(_), Some(_)) => {
            problems
                .push("server.master_key and server.master_key_file are both set; keep one".into());
            MasterKeySource::Development(data_dir.join("master.key"))
        }
        (Some(text), None) => MasterKeySource::Inline(text),
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
        (Some(token), None) if !token.expose_secret().is_empty() => {
            let token = token.expose_secret().trim();
            if token.len() < MIN_ADMIN_TOKEN_LEN {
                problems.push(format!(
                    "server.admin_token is {} characters; use at least {MIN_ADMIN_TOKEN_LEN} random \
                     characters (`jwksd callers new-token` prints one)",
                    token.len()
                ));
            }
            // Only the hash is kept; the plaintext is wiped when `token`'s owner drops.
            AdminTokenSource::Inline(sha256(token.as_bytes()))
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

    let poll_interval = match &s.poll_interval {
        None => DEFAULT_POLL_INTERVAL,
        Some(text) => match parse_duration("server.poll_interval", text, problems) {
            Some(d) if (Duration::from_secs(1)..=Duration::from_secs(300)).contains(&d) => d,
            Some(_) => {
                problems.push(format!(
                    "server.poll_interval = {text:?} must be between 1s and 5m (each re-read \
                     verifies every key row; \"5s\" is usual)"
                ));
                DEFAULT_POLL_INTERVAL
            }
            None => DEFAULT_POLL_INTERVAL,
        },
    };

    let trusted_proxies = s
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .filter_map(|text| {
            let parsed = IpNetwork::parse(text);
            if parsed.is_none() {
                problems.push(format!(
                    "server.trusted_proxies: {text:?} is not an IP network; write it like \
                     \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\""
                ));
            }
            parsed
        })
        .collect();
    let log_format = match s.log_format.as_deref().map(str::trim) {
        None | Some("") => LogFormat::default(),
        Some(text) => text.parse().unwrap_or_else(|()| {
            problems.push(format!(
                "server.log_format = {text:?} must be \"text\" (for people) or \"json\" (one \
                 JSON object a line, for a log shipper)"
            ));
            LogFormat::default()
        }),
    };
    let public_tls = tls_files(
        "public",
        ("server.tls_cert_file", s.tls_cert_file),
        ("server.tls_key_file", s.tls_key_file),
        problems,
    );
    let private_tls = tls_files(
        "private",
        ("server.private_tls_cert_file", s.private_tls_cert_file),
        ("server.private_tls_key_file", s.private_tls_key_file),
        problems,
    );
    if private_tls.is_none() && !is_loopback_listen(&private_listen) {
        // The private listener carries the admin token and the callers' tokens.
        warnings.push(format!(
            "server.private_listen = {private_listen:?} listens beyond loopback without TLS: \
             admin and caller bearer tokens cross the network in clear text; set \
             server.private_tls_cert_file and server.private_tls_key_file, or keep the \
             listener on a network only trusted hosts reach"
        ));
    }

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
        poll_interval,
        trusted_proxies,
        log_format,
        public_tls,
        private_tls,
    }
}

/// One listener's pair of TLS files: both or neither (an empty path counts as unset).
fn tls_files(
    listener: &'static str,
    (cert_key_name, cert): (&'static str, Option<PathBuf>),
    (key_key_name, key): (&'static str, Option<PathBuf>),
    problems: &mut Vec<String>,
) -> Option<TlsFiles> {
    let set = |path: Option<PathBuf>| path.filter(|p| !p.as_os_str().is_empty());
    match (set(cert), set(key)) {
        (None, None) => None,
        (Some(cert_file), Some(key_file)) => Some(TlsFiles {
            cert_file,
            key_file,
            cert_key_name,
            key_key_name,
            listener,
        }),
        (Some(_), None) | (None, Some(_)) => {
            problems.push(format!(
                "{cert_key_name} and {key_key_name} go together: set both (the certificate \
                 chain and its private key, PEM) for HTTPS, or neither for plain HTTP"
            ));
            None
        }
    }
}

/// Whether a listen address (`HOST:PORT`) is reachable only from this host.
fn is_loopback_listen(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod trusted_proxy_tests {
    use super::IpNetwork;

    #[test]
    fn networks_contain_their_addresses_and_nothing_else() {
        let net = IpNetwork::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.2.3".parse().unwrap()),
            "IPv4-mapped"
        );
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let host = IpNetwork::parse("192.0.2.7").unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let v6 = IpNetwork::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(IpNetwork::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "example.org", "::/129", ""] {
            assert_eq!(IpNetwork::parse(bad), None, "{bad:?}");
        }
    }
}
