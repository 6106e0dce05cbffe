//! The one client of a running jwksd's private listener that every CLI command uses
//! (`keys`, `doctor`, `register`, `token`): where the listener is, which bearer token to
//! send, the timeouts, the URLs, and how a refusal becomes an error a person can act on.
//!
//! Where and with which token follow the server's own configuration, loaded as `serve`
//! loads it (`--config`/`JWKSD_CONFIG` plus `JWKSD_` variables): the URL from
//! `server.private_listen`, the admin token from `server.admin_token`,
//! `server.admin_token_file` or the generated `<data_dir>/admin.token`. `--server` /
//! `JWKSD_SERVER` and `JWKSD_ADMIN_TOKEN` override them, so a client on another host needs
//! no configuration at all.
//!
//! Every path argument (a kid, key set or client name) is checked to be a name and pushed
//! as one segment, so that no argument can steer a request to another route.
//!
//! HTTPS ([`Trust`]): a listener reached through the configuration (its `private_tls_*` or
//! `tls_*` keys set) is dialled as `https://` on loopback and trusted by exactly the
//! certificate its cert file holds, whatever names that certificate carries. A URL given
//! on the command line (`--server`, `JWKSD_SERVER`, `healthcheck --url`) is trusted by the
//! system's roots and the CA certificates of the PEM file `JWKSD_CA_FILE` names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    AuditPage, AuditQuery, ClientInfo, ClientList, Jwks, KeyList, KeysetInfo, KeysetList, Problem,
    Revocation, RevokeRequest, RotateRequest, Rotation, TokenCheck, TokenRequest, TokenResponse,
};
use crate::config::{AdminTokenSource, Config};
use crate::tokens::describe_reqwest_error;
use crate::tokens::upstream::{read_limited, ADMIN_ANSWER_LIMIT};

/// The variable naming a PEM file of CA certificates the CLI trusts beside the system's, for
/// a jwksd whose certificate a private CA issued.
pub const CA_FILE_VARIABLE: &str = "JWKSD_CA_FILE";

/// Which certificates the CLI trusts on an `https://` URL.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The system's roots and those in `JWKSD_CA_FILE`: for a URL given by hand.
    Roots,
    /// Exactly the end-entity certificate at the head of `cert_file` (the configuration key
    /// `key_name` names it): for the listener jwksd's own configuration describes.
    Pinned {
        cert_file: PathBuf,
        key_name: &'static str,
    },
}

impl Trust {
    /// The trust of a listener the configuration describes: pinned when it serves HTTPS.
    pub fn of_listener(tls: Option<&crate::config::TlsFiles>) -> Trust {
        match tls {
            Some(files) => Trust::Pinned {
                cert_file: files.cert_file.clone(),
                key_name: files.cert_key_name,
            },
            None => Trust::Roots,
        }
    }

    /// The scheme to dial a configured listener with.
    pub fn scheme(&self) -> &'static str {
        match self {
            Trust::Roots => "http",
            Trust::Pinned { .. } => "https",
        }
    }
}

/// Time to open a connection to jwksd: it runs beside the CLI, so a longer wait means it
/// is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole admin request; the admin API answers from memory or one commit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for requests that make jwksd call a token endpoint, which retries within its own
/// budget of 20 s (`tokens`), plus one request's time.
const UPSTREAM_REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// How the command line named the service: each `None` is taken from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `--server` / `JWKSD_SERVER`: the private listener's base URL (or `HOST:PORT`).
    pub server: Option<String>,
    /// `--config` / `JWKSD_CONFIG`: the server's configuration file.
    pub config: Option<PathBuf>,
    /// `--admin-token-file`: a file holding the admin token.
    pub admin_token_file: Option<PathBuf>,
}

impl Target {
    /// Loads the server's configuration, as `serve` would, for the values the command line
    /// did not give.
    fn load_config(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), std::env::vars()).with_context(|| {
            let origin = match &self.config {
                Some(path) => format!("{} and JWKSD_ variables", path.display()),
                None => "JWKSD_ variables (no --config or JWKSD_CONFIG)".to_owned(),
            };
            format!(
                "the admin URL and token follow jwksd's configuration, and the one from {origin} \
                 cannot be used; fix it, or set JWKSD_SERVER and JWKSD_ADMIN_TOKEN"
            )
        })
    }

    /// The private listener's base URL and how to trust it: `--server` (system roots and
    /// `JWKSD_CA_FILE`), else `server.private_listen` (its own certificate, when it has one).
    fn server_url(&self, config: &mut Lazy<'_>) -> anyhow::Result<(String, Trust)> {
        if let Some(server) = self.server.as_deref().filter(|s| !s.trim().is_empty()) {
            return Ok((server_url(server.trim()), Trust::Roots));
        }
        let server = &config.get()?.server;
        let trust = Trust::of_listener(server.private_tls.as_ref());
        let listen = &server.private_listen;
        if listen.ends_with(":0") {
            bail!(
                "server.private_listen is {listen}: the port is chosen when jwksd starts, so the \
                 CLI cannot know it; set --server or JWKSD_SERVER to the listener's address"
            );
        }
        Ok((
            format!("{}://{}", trust.scheme(), local_address(listen)),
            trust,
        ))
    }

    /// The admin token: `JWKSD_ADMIN_TOKEN`, else `--admin-token-file`, else the
    /// configuration's.
    fn admin_token(&self, config: &mut Lazy<'_>) -> anyhow::Result<String> {
        if let Some(token) = env_token("JWKSD_ADMIN_TOKEN") {
            return Ok(token);
        }
        if let Some(path) = &self.admin_token_file {
            return read_token_file(path, "--admin-token-file");
        }
        match &config.get()?.server.admin_token {
            // The configuration keeps only the inline token's hash, so the CLI cannot read it
            // back from there.
            AdminTokenSource::Inline(_) => bail!(
                "server.admin_token is set inline, and jwksd keeps only its hash; set \
                 JWKSD_ADMIN_TOKEN to the token, or move it to a file named by \
                 server.admin_token_file"
            ),
            AdminTokenSource::File(path) => read_token_file(path, "server.admin_token_file"),
            AdminTokenSource::Generated(path) => read_token_file(path, "generated"),
        }
    }
}

/// The server's configuration, loaded only when the command line leaves a value to it: a
/// client given `--server` and a token works even where no configuration is valid.
struct Lazy<'a> {
    target: &'a Target,
    loaded: Option<Config>,
}

impl<'a> Lazy<'a> {
    fn new(target: &'a Target) -> Self {
        Lazy {
            target,
            loaded: None,
        }
    }

    fn get(&mut self) -> anyhow::Result<&Config> {
        let config = match self.loaded.take() {
            Some(config) => config,
            None => self.target.load_config()?,
        };
        Ok(self.loaded.insert(config))
    }
}

/// A non-empty token from the environment variable `name`, trimmed.
fn env_token(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Reads the admin token from `path`; `origin` says how the path was chosen, for the error.
fn read_token_file(path: &Path, origin: &str) -> anyhow::Result<String> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && origin == "generated" => bail!(
            "no admin token: {shown} does not exist. jwksd writes it on its first start into its \
             data directory; start jwksd first, or give this command the server's configuration \
             (--config, JWKSD_CONFIG, JWKSD_SERVER__DATA_DIR), or set JWKSD_ADMIN_TOKEN"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot read the admin token file {shown} ({origin}): {e}; run this command as the \
             user jwksd runs as (or one in its group), or set JWKSD_ADMIN_TOKEN"
        ),
        Err(e) => bail!(
            "cannot read the admin token file {shown} ({origin}): {e}; set JWKSD_ADMIN_TOKEN, or \
             pass --admin-token-file"
        ),
    };
    let token = text.trim();
    if token.is_empty() {
        bail!(
            "the admin token file {shown} ({origin}) is empty; put the admin token there, or set \
             JWKSD_ADMIN_TOKEN"
        );
    }
    Ok(token.to_owned())
}

/// The address a local client uses to reach a listener: an unspecified address (`0.0.0.0`,
/// `[::]`) means every address of this host, reached here through loopback.
pub fn local_address(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, addr.port()).to_string()
        }
        _ => listen.to_owned(),
    }
}

/// The private listener's base URL; `HOST:PORT` alone means plain http.
fn server_url(server: &str) -> String {
    let server = server.trim_end_matches('/');
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// The HTTP client of every CLI command that talks to jwksd: bounded connect and request
/// times, no redirects (a redirect would carry the bearer token elsewhere), and on https
/// the certificates `trust` names.
pub fn http_client(trust: &Trust) -> anyhow::Result<reqwest::Client> {
    crate::tokens::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("jwksd-cli/", env!("CARGO_PKG_VERSION")));
    match trust {
        Trust::Roots => {
            for cert in extra_roots()? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Trust::Pinned {
            cert_file,
            key_name,
        } => {
            let tls = crate::tls::pinned_client_config(cert_file, key_name).with_context(|| {
                "the CLI trusts exactly the certificate of the listener it reaches through \
                 jwksd's configuration; or set JWKSD_SERVER (then the system's roots and \
                 JWKSD_CA_FILE are trusted)"
            })?;
            builder = builder.use_preconfigured_tls(tls);
        }
    }
    builder.build().context("cannot build an HTTP client")
}

/// The CA certificates of the file `JWKSD_CA_FILE` names (none when it is unset).
fn extra_roots() -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(path) = std::env::var_os(CA_FILE_VARIABLE).filter(|p| !p.is_empty()) else {
        return Ok(Vec::new());
    };
    let path = PathBuf::from(path);
    let pem = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {CA_FILE_VARIABLE} = {}; name a PEM file of CA certificates",
            path.display()
        )
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
        format!(
            "{CA_FILE_VARIABLE} = {} is not a PEM file of certificates",
            path.display()
        )
    })?;
    if certs.is_empty() {
        bail!(
            "{CA_FILE_VARIABLE} = {} holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

/// A client of one jwksd's private listener, authenticated with one bearer token.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the admin API, for `target`.
    pub fn admin(target: &Target) -> anyhow::Result<Client> {
        let mut config = Lazy::new(target);
        let (base, trust) = target.server_url(&mut config)?;
        let token = target.admin_token(&mut config)?;
        Client::new(base, token, &trust)
    }

    /// A client of the caller API (`/v1/...`), with a caller's token.
    pub fn caller(target: &Target, token: String) -> anyhow::Result<Client> {
        let (base, trust) = target.server_url(&mut Lazy::new(target))?;
        Client::new(base, token, &trust)
    }

    fn new(base: String, token: String, trust: &Trust) -> anyhow::Result<Client> {
        // Parsed here once, so that a bad --server fails before anything else happens.
        api_url(&base, &[], &[])?;
        Ok(Client {
            base,
            token,
            http: http_client(trust)?,
        })
    }

    /// Sends one request and decodes the answer as `T`, or turns a refusal into an error
    /// (see [`refusal`]).
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {}", url.path());
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach jwksd at {url}: {}; is it running? (--server, JWKSD_SERVER, or \
                 server.private_listen in --config)",
                describe_reqwest_error(&e)
            )
        })?;
        let status = response.status();
        let bytes = read_limited(response, ADMIN_ANSWER_LIMIT)
            .await
            .with_context(|| format!("jwksd's answer to {what}"))?;
        if !status.is_success() {
            return Err(refusal(&what, status, &bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!("jwksd's answer to {what} is not what this CLI expects (another version?)")
        })
    }

    /// `GET /admin/v1/{segments...}`.
    async fn admin_get<T: DeserializeOwned>(&self, segments: &[&str]) -> anyhow::Result<T> {
        let url = api_url(&self.base, &admin_path(segments), &[])?;
        self.send(reqwest::Method::GET, url, None, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /admin/v1/{segments...}?{query}` with an optional JSON body.
    async fn admin_post<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let url = api_url(&self.base, &admin_path(segments), query)?;
        let body = body.map(serde_json::to_vec).transpose()?;
        self.send(reqwest::Method::POST, url, body, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /admin/v1/audit?...`: one page of the audit trail.
    pub async fn audit_page(&self, query: &AuditQuery) -> anyhow::Result<AuditPage> {
        let limit = query.limit.map(|l| l.to_string());
        let pairs: Vec<(&str, &str)> = [
            ("since", query.since.as_deref()),
            ("client", query.client.as_deref()),
            ("caller", query.caller.as_deref()),
            ("kid", query.kid.as_deref()),
            ("event", query.event.as_deref()),
            ("cursor", query.cursor.as_deref()),
            ("limit", limit.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
        let url = api_url(&self.base, &admin_path(&["audit"]), &pairs)?;
        self.send(reqwest::Method::GET, url, None, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /admin/v1/keysets`.
    pub async fn keysets(&self) -> anyhow::Result<KeysetList> {
        self.admin_get(&["keysets"]).await
    }

    /// `GET /admin/v1/keysets/{keyset}/keys`.
    pub async fn keys(&self, keyset: &str) -> anyhow::Result<KeyList> {
        self.admin_get(&["keysets", keyset, "keys"]).await
    }

    /// `GET /admin/v1/keysets/{keyset}/jwks`: the key set's JWKS as published.
    pub async fn jwks(&self, keyset: &str) -> anyhow::Result<Jwks> {
        self.admin_get(&["keysets", keyset, "jwks"]).await
    }

    /// `POST /admin/v1/keysets/{keyset}/rotate[?force=true]`.
    pub async fn rotate(&self, keyset: &str, force: bool) -> anyhow::Result<Rotation> {
        let query: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
        self.admin_post(
            &["keysets", keyset, "rotate"],
            query,
            None::<&RotateRequest>,
        )
        .await
    }

    /// `POST /admin/v1/keys/{kid}/revoke`, with a body only when there is a reason.
    pub async fn revoke(&self, kid: &str, reason: Option<String>) -> anyhow::Result<Revocation> {
        let body = reason.map(|reason| RevokeRequest {
            reason: Some(reason),
        });
        self.admin_post(&["keys", kid, "revoke"], &[], body.as_ref())
            .await
    }

    /// `GET /admin/v1/clients`.
    pub async fn clients(&self) -> anyhow::Result<ClientList> {
        self.admin_get(&["clients"]).await
    }

    /// The client named `name` (by section name or client_id) and its key set.
    pub async fn client_and_keyset(&self, name: &str) -> anyhow::Result<(ClientInfo, KeysetInfo)> {
        let client = self
            .clients()
            .await?
            .clients
            .into_iter()
            .find(|c| c.name == name || c.client_id == name)
            .ok_or_else(|| {
                anyhow!("jwksd has no client named {name:?} (see [clients.*] in its configuration)")
            })?;
        let keyset = self
            .keysets()
            .await?
            .keysets
            .into_iter()
            .find(|k| k.name == client.keyset)
            .ok_or_else(|| anyhow!("the client's key set is not served"))?;
        Ok((client, keyset))
    }

    /// `POST /admin/v1/clients/{client}/token-check`: a real, uncached token request.
    pub async fn token_check(&self, client: &str) -> anyhow::Result<TokenCheck> {
        let url = api_url(
            &self.base,
            &admin_path(&["clients", client, "token-check"]),
            &[],
        )?;
        self.send(reqwest::Method::POST, url, None, UPSTREAM_REQUEST_TIMEOUT)
            .await
    }

    /// `POST /v1/tokens` as a caller.
    pub async fn token(&self, request: &TokenRequest) -> anyhow::Result<TokenResponse> {
        let url = api_url(&self.base, &["v1", "tokens"], &[])?;
        let body = serde_json::to_vec(request)?;
        self.send(
            reqwest::Method::POST,
            url,
            Some(body),
            UPSTREAM_REQUEST_TIMEOUT,
        )
        .await
    }
}

fn admin_path<'a>(segments: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["admin", "v1"];
    path.extend_from_slice(segments);
    path
}

/// The one reading of a refusal: jwksd answers `application/problem+json` (RFC 9457), with
/// the fix, the token endpoint's OAuth error and an error id among its extension members.
/// Anything else (a proxy's page) is named by its status alone.
fn refusal(what: &str, status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    let Ok(problem) = serde_json::from_slice::<Problem>(body) else {
        return anyhow!("jwksd refused {what} ({status}): (no detail)");
    };
    let mut message = format!("jwksd refused {what} ({status}): {}", problem.detail);
    if let Some(upstream) = &problem.upstream {
        message.push_str(&format!("\n  fix: {}", upstream.fix));
        if let Some(error) = &upstream.error {
            message.push_str(&format!(
                "\n  upstream: {error} {}",
                upstream.error_description.as_deref().unwrap_or("")
            ));
        }
    }
    if let Some(seconds) = problem.retry_after {
        message.push_str(&format!("\n  retry after: {seconds}s"));
    }
    if let Some(id) = &problem.error_id {
        message.push_str(&format!("\n  error id: {id} (find it in jwksd's log)"));
    }
    anyhow!(message)
}

/// The URL of `segments` under `base` (the private listener's base URL), with `query`.
/// Every segment must be a name (see [`check_segment`]) and is pushed as one
/// percent-encoded path segment, so that no argument, such as the kid
/// `x/../../keysets/default/rotate?force=true#`, can steer a request to another route.
fn api_url(base: &str, segments: &[&str], query: &[(&str, &str)]) -> anyhow::Result<reqwest::Url> {
    for segment in segments {
        check_segment(segment)?;
    }
    let mut url = reqwest::Url::parse(&server_url(base)).with_context(|| {
        format!(
            "the admin URL {base:?} is not a URL; set --server or JWKSD_SERVER to the private \
             listener, e.g. http://127.0.0.1:8081"
        )
    })?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| anyhow!("the admin URL {base:?} cannot have a path; use http://HOST:PORT"))?
        .pop_if_empty()
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Kids (base64url thumbprints), key set names and client names are made of letters,
/// digits, `.`, `_` and `-`. Anything else is refused before a request is made, rather than
/// encoded and sent: `.` and `..` in particular are dropped silently by URL libraries
/// (`reqwest::Url` among them), which would send the request to the parent route.
fn check_segment(segment: &str) -> anyhow::Result<()> {
    let is_name = !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !is_name {
        bail!(
            "refusing {segment:?}: a kid, key set or client name is made only of letters, \
             digits, '.', '_' and '-' (and is not \".\" or \"..\"); nothing was sent to jwksd"
        );
    }
    Ok(())
}

/// An answer of jwksd as `--json` prints it: pretty, members in alphabetical order (as the
/// CLI has always printed them, whatever order the wire types declare).
pub fn pretty<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&serde_json::to_value(value)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin_url(base: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
        api_url(base, &admin_path(segments), &[])
    }

    #[test]
    fn admin_urls_keep_the_base_and_refuse_what_is_not_a_name() {
        let url = admin_url("127.0.0.1:8081/", &["keysets", "epic-prod", "keys"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8081/admin/v1/keysets/epic-prod/keys"
        );
        let url = admin_url(
            "https://ops.example/jwksd/?x=1#y",
            &["keys", "a.b_c-D9", "revoke"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://ops.example/jwksd/admin/v1/keys/a.b_c-D9/revoke"
        );
        for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2Fb", "é", "a b"] {
            let err = admin_url("http://127.0.0.1:8081", &["keys", bad, "revoke"]).unwrap_err();
            assert!(
                err.to_string().contains("nothing was sent"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn a_query_is_encoded_after_the_path() {
        let url = api_url(
            "http://127.0.0.1:8081",
            &["admin", "v1", "keysets", "default", "rotate"],
            &[("force", "true")],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8081/admin/v1/keysets/default/rotate?force=true"
        );
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_through_loopback() {
        assert_eq!(local_address("0.0.0.0:8081"), "127.0.0.1:8081");
        assert_eq!(local_address("[::]:8081"), "[::1]:8081");
        assert_eq!(local_address("10.1.2.3:8081"), "10.1.2.3:8081");
        assert_eq!(local_address("localhost:8081"), "localhost:8081");
    }

    #[test]
    fn a_refusal_reads_the_problem_and_its_extensions() {
        let body = br#"{"type":"urn:jwksd:problem:upstream-refused","title":"Bad Gateway",
            "status":502,"detail":"the token endpoint refused","classification":"other",
            "fix":"register the key","upstream_status":401,"error":"invalid_client",
            "error_description":"bad signature","error_uri":null,"error_id":"e-1",
            "diagnosis":{"token_endpoint":"https://ehr.example/token","kid":null,
            "kid_published_for_seconds":null,"audience":"https://ehr.example/token",
            "scope":"","attempts":1,"clock_skew_seconds":null}}"#;
        let text = refusal("POST /v1/tokens", reqwest::StatusCode::BAD_GATEWAY, body).to_string();
        assert!(
            text.starts_with(
                "jwksd refused POST /v1/tokens (502 Bad Gateway): the token endpoint refused"
            ),
            "{text}"
        );
        assert!(text.contains("\n  fix: register the key"), "{text}");
        assert!(
            text.contains("\n  upstream: invalid_client bad signature"),
            "{text}"
        );
        assert!(text.contains("e-1"), "{text}");
        let text = refusal("GET /x", reqwest::StatusCode::BAD_GATEWAY, b"<html>").to_string();
        assert!(text.ends_with("(no detail)"), "{text}");
    }

    #[test]
    fn an_unreadable_token_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("admin.token");
        let err = read_token_file(&missing, "generated")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("JWKSD_ADMIN_TOKEN"), "{err}");
        let err = read_token_file(&missing, "server.admin_token_file")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.admin_token_file"), "{err}");
        std::fs::write(&missing, "\n").unwrap();
        let err = read_token_file(&missing, "generated")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
