//! The one place that wires jwksd together: data directory, master key, store, keyring,
//! both listeners and the scheduler. `main` and the integration tests both start the
//! service through [`Application::build`], so they run the same thing.
//!
//! Start-up refuses, with a message that says what to do, rather than start "healthy" on a
//! fresh key set where one existed before: a missing store beside an existing master key,
//! a store without its master key, a damaged store, or the wrong master key.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::KeepAlive;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use tracing::{error, info, warn};

use crate::audit::AuditWriter;
use crate::config::{AdminTokenSource, Config, Database, MasterKeySource};
use crate::http::limits::BodyPolicy;
use crate::http::{self, auth::TokenHash, State};
use crate::keyring::Keyring;
use crate::keys::MasterKey;
use crate::ratelimit::RateLimiter;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::tokens::TokenService;

/// Why jwksd would not start. Each message names the file or setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] crate::store::sqlite::OpenError),
    #[error(transparent)]
    Keys(#[from] crate::error::Error),
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another process using the port, or is \
         the address not one of this machine's?"
    )]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// A built, bound, not yet running service.
pub struct Application {
    public_addr: SocketAddr,
    private_addr: SocketAddr,
    keyring: Arc<Keyring>,
    tokens: Arc<TokenService>,
    reloader: Arc<Reloader>,
    admin_token: Option<String>,
    public_server: Server,
    private_server: Server,
}

impl Application {
    /// Opens everything and binds both listeners (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, crate::system_clock()).await
    }

    /// As [`Application::build`], with the clock the token cache reads (tests move it).
    pub async fn build_with_clock(config: Config, clock: crate::Clock) -> Result<Self, StartError> {
        for warning in &config.warnings {
            warn!("{warning}");
        }
        let server = &config.server;
        // Everything that can fail without touching the store comes first, so a failed
        // start leaves no half-made store or key behind.
        let bind = |what: &'static str, addr: &String| {
            std::net::TcpListener::bind(addr.as_str()).map_err(|source| StartError::Bind {
                what,
                addr: addr.clone(),
                source,
            })
        };
        let public_listener = bind("server.public_listen", &server.public_listen)?;
        let private_listener = bind("server.private_listen", &server.private_listen)?;
        let http_client = crate::tokens::outbound_client().map_err(|e| {
            StartError::Refused(format!("cannot set up the outbound HTTP client: {e}"))
        })?;
        ensure_dir(&server.data_dir)?;
        let (admin_hash, admin_token) = load_admin_token(&server.admin_token)?;
        let Database::Sqlite(db_path) = &server.database;
        if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            ensure_dir(parent)?;
        }
        let store_exists = db_path.exists();
        let external_key = !matches!(server.master_key, MasterKeySource::Development(_));
        if !store_exists && external_key && !server.initialize {
            return Err(StartError::Refused(format!(
                "there is no key store at {}. With an external master key jwksd does not create one \
                 by itself: a missing store usually means an unmounted volume or a wrong data_dir, \
                 and a fresh key set would break every registered integration. If this is the \
                 first start, run `jwksd serve --init` (or set JWKSD_INIT=1) once",
                db_path.display()
            )));
        }
        let master = Arc::new(load_master_key(&server.master_key, store_exists, db_path)?);
        let store = SqliteStore::open(db_path, !store_exists, Some(master.clone())).await?;
        if !store_exists {
            info!(path = %db_path.display(), "created a new key store");
        }
        let store: Arc<dyn Store> = Arc::new(store);
        let keyring = Arc::new(
            Keyring::open(
                store,
                master,
                config.keysets.clone(),
                !store_exists,
                crate::unix_now(),
            )
            .await?,
        );

        let audit = AuditWriter::start(keyring.store().clone());
        let tokens = Arc::new(TokenService::new(http_client, clock));
        let state = web::Data::new(State {
            keyring: keyring.clone(),
            admin_token: admin_hash,
            public_url: server.public_url.clone().unwrap_or_default(),
            access: RwLock::new(Arc::new(config.access.clone())),
            audit,
            limiter: RateLimiter::default(),
            tokens: tokens.clone(),
            metrics: Default::default(),
        });
        let reloader = Reloader {
            state: state.clone(),
            running: config.clone(),
        };
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));

        let limits = server.limits.clone();
        let per_worker = |workers: usize| limits.max_connections.div_ceil(workers).max(1);
        let public_body = web::Data::new(BodyPolicy {
            max_bytes: None,
            deadline: limits.body_timeout,
        });
        let private_body = web::Data::new(BodyPolicy {
            max_bytes: Some(http::MAX_BODY_BYTES),
            deadline: limits.body_timeout,
        });

        let public_state = state.clone();
        let public = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::limits::guard_body))
                .wrap(ErrorHandlers::new().default_handler(http::problem::ensure_problem))
                .app_data(public_body.clone())
                .app_data(public_state.clone())
                .configure(http::common)
                .configure(http::public::routes)
                .default_service(web::to(http::not_found))
        })
        .workers(workers)
        .max_connections(per_worker(workers))
        .client_request_timeout(limits.header_timeout)
        // One request per connection: actix-http times only the first request head of a
        // connection, so on a kept-alive one a client could send the next head a byte at a
        // time for ever and, with enough sockets, hold every slot. EHRs fetch the JWKS a
        // few times an hour; a new connection each time costs them nothing.
        .keep_alive(KeepAlive::Disabled)
        .client_disconnect_timeout(Duration::from_secs(1))
        .listen(public_listener)
        .map_err(|source| StartError::Bind {
            what: "server.public_listen",
            addr: server.public_listen.clone(),
            source,
        })?;
        let public_addr = public.addrs()[0];

        let private_state = state.clone();
        let private = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(http::limits::guard_body))
                .wrap(ErrorHandlers::new().default_handler(http::problem::ensure_problem))
                .app_data(private_body.clone())
                .app_data(private_state.clone())
                .configure(http::common)
                .configure(http::admin::routes)
                .configure(http::signing::routes)
                .configure(http::tokens::routes)
                .configure(http::metrics::routes)
                .configure(http::health_routes)
                .default_service(web::to(http::not_found))
        })
        .workers(workers.min(2))
        .max_connections(per_worker(workers.min(2)))
        .client_request_timeout(limits.header_timeout)
        .keep_alive(limits.header_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .listen(private_listener)
        .map_err(|source| StartError::Bind {
            what: "server.private_listen",
            addr: server.private_listen.clone(),
            source,
        })?;
        let private_addr = private.addrs()[0];
        info!(%public_addr, %private_addr, keysets = ?config.keysets.keys(), "jwksd is listening");

        Ok(Application {
            public_addr,
            private_addr,
            keyring,
            tokens,
            reloader: Arc::new(reloader),
            admin_token,
            public_server: public.run(),
            private_server: private.run(),
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    pub fn private_addr(&self) -> SocketAddr {
        self.private_addr
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.clone()
    }

    pub fn token_service(&self) -> Arc<TokenService> {
        self.tokens.clone()
    }

    /// The admin token, when jwksd read or generated it from a file (for tests and the
    /// start-up hint); `None` when it came inline from the configuration.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Re-reads clients and callers; see [`Reloader`].
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Handles that stop both listeners (graceful when `stop(true)`).
    pub fn stop_handles(&self) -> [actix_web::dev::ServerHandle; 2] {
        [self.public_server.handle(), self.private_server.handle()]
    }

    /// Serves until SIGINT/SIGTERM (graceful) and runs the key scheduler meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let scheduler = tokio::spawn(run_scheduler(self.keyring.clone()));
        let reloads = tokio::spawn(reload_on_sighup(self.reloader.clone()));
        let protocol_errors = tokio::spawn(crate::logging::summarize_protocol_errors(
            Duration::from_secs(60),
        ));
        let result = tokio::try_join!(self.public_server, self.private_server);
        scheduler.abort();
        reloads.abort();
        protocol_errors.abort();
        let _ = scheduler.await;
        // Checkpoints the WAL and releases the file before the process exits.
        if let Err(e) = self.keyring.store().close().await {
            warn!(error = %e, "closing the store failed");
        }
        info!("jwksd stopped");
        result.map(|_| ())
    }
}

/// Applies configuration reloads: clients and callers change at once; changes to
/// listeners, storage or key sets need a restart and are reported as such.
pub struct Reloader {
    state: web::Data<State>,
    running: Config,
}

impl Reloader {
    /// Re-reads the configuration the service started with (same file, current
    /// environment) and applies it. On any problem the running configuration stays.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let config = Config::load(self.running.source.as_deref(), std::env::vars())
            .map_err(|e| e.to_string())?;
        self.apply(config)
    }

    /// Applies `config`'s clients and callers; returns warnings about parts that need a
    /// restart. Refuses a configuration whose clients name key sets that are not running.
    pub fn apply(&self, config: Config) -> Result<Vec<String>, String> {
        for client in config.access.clients.values() {
            if !self.running.keysets.contains_key(&client.keyset) {
                return Err(format!(
                    "client {} names key set {:?}, which is not running; key sets change only at restart",
                    client.name, client.keyset
                ));
            }
        }
        let mut warnings = config.warnings.clone();
        if config.keysets != self.running.keysets {
            warnings.push("key set changes take effect at the next restart".into());
        }
        if format!("{:?}", config.server) != format!("{:?}", self.running.server) {
            warnings.push("[server] changes take effect at the next restart".into());
        }
        self.state.set_access(config.access);
        Ok(warnings)
    }
}

#[cfg(unix)]
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; configuration reload is unavailable");
        return;
    };
    while hangups.recv().await.is_some() {
        match reloader.reload() {
            Ok(warnings) => {
                for warning in warnings {
                    warn!("{warning}");
                }
                info!("configuration reloaded: clients and callers updated");
            }
            Err(e) => error!("configuration reload refused, the running configuration stays: {e}"),
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_: Arc<Reloader>) {}

/// The background loop: apply the schedule, sleep until the next change (at most a minute,
/// so clock jumps and config-independent repairs are noticed), repeat.
async fn run_scheduler(keyring: Arc<Keyring>) {
    const MAX_SLEEP: i64 = 60;
    loop {
        let now = crate::unix_now();
        let sleep = match keyring.tick(now).await {
            Ok(next) => next.map_or(MAX_SLEEP, |at| (at - now).clamp(1, MAX_SLEEP)),
            Err(e) => {
                error!(error = %e, "the key schedule could not be applied; retrying in 30s");
                30
            }
        };
        tokio::time::sleep(Duration::from_secs(sleep as u64)).await;
    }
}

fn ensure_dir(path: &Path) -> Result<(), StartError> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| {
        StartError::Refused(format!(
            "cannot create the data directory {}: {e}; create it or set server.data_dir",
            path.display()
        ))
    })
}

/// Writes `contents` to a new file readable only by its owner, and syncs it to disk.
fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

fn read_secret_file(path: &Path, what: &str) -> Result<zeroize::Zeroizing<String>, StartError> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| {
            StartError::Refused(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ))
        })
}

fn load_master_key(
    source: &MasterKeySource,
    store_exists: bool,
    db_path: &Path,
) -> Result<MasterKey, StartError> {
    let parse = |text: &str, origin: String| {
        MasterKey::from_text(text).map_err(|e| {
            StartError::Refused(format!("the master key from {origin} is not usable: {e}"))
        })
    };
    match source {
        MasterKeySource::Inline(secret) => parse(secret.expose(), "server.master_key".into()),
        MasterKeySource::File(path) => {
            let text = read_secret_file(path, "master key")?;
            parse(&text, path.display().to_string())
        }
        MasterKeySource::Development(path) => {
            match (path.exists(), store_exists) {
                (true, true) => {
                    let text = read_secret_file(path, "master key")?;
                    parse(&text, path.display().to_string())
                }
                (true, false) => Err(StartError::Refused(format!(
                    "found the master key {} but no key store at {}. The store was deleted or \
                     moved, or data_dir points to the wrong place. Restore the store from a backup \
                     (starting afresh would publish new keys and break every registered \
                     integration). If this really is a new installation, delete {} first",
                    path.display(),
                    db_path.display(),
                    path.display()
                ))),
                (false, true) => Err(StartError::Refused(format!(
                    "the key store {} exists but its master key {} is missing. Restore the master \
                     key file, or set server.master_key_file / JWKSD_SERVER__MASTER_KEY to where it is",
                    db_path.display(),
                    path.display()
                ))),
                (false, false) => {
                    let (key, text) = MasterKey::generate();
                    write_secret_file(path, &text).map_err(|e| {
                        StartError::Refused(format!(
                            "cannot write the development master key {}: {e}",
                            path.display()
                        ))
                    })?;
                    warn!(
                        path = %path.display(),
                        "generated a development master key beside the store; in production supply \
                         it from a secret manager (server.master_key_file or JWKSD_SERVER__MASTER_KEY_FILE) \
                         and keep it apart from the store's backups"
                    );
                    Ok(key)
                }
            }
        }
    }
}

fn load_admin_token(source: &AdminTokenSource) -> Result<(TokenHash, Option<String>), StartError> {
    match source {
        AdminTokenSource::Inline(secret) => Ok((TokenHash::of(secret.expose()), None)),
        AdminTokenSource::File(path) => {
            let text = read_secret_file(path, "admin token")?;
            let token = text.trim().to_owned();
            if token.len() < 32 {
                return Err(StartError::Refused(format!(
                    "the admin token in {} is shorter than 32 characters; put a long random token there",
                    path.display()
                )));
            }
            Ok((TokenHash::of(&token), Some(token)))
        }
        AdminTokenSource::Generated(path) => {
            if path.exists() {
                let text = read_secret_file(path, "admin token")?;
                let token = text.trim().to_owned();
                return Ok((TokenHash::of(&token), Some(token)));
            }
            let token = crate::random_token();
            write_secret_file(path, &token).map_err(|e| {
                StartError::Refused(format!(
                    "cannot write the admin token {}: {e}",
                    path.display()
                ))
            })?;
            info!(path = %path.display(), "generated an admin token; the CLI reads it from JWKSD_ADMIN_TOKEN");
            Ok((TokenHash::of(&token), Some(token)))
        }
    }
}

/// The master key of an existing store, as the configuration names it; never creates one
/// (for the CLI's offline commands, such as `jwksd audit verify`).
pub fn read_master_key(config: &Config) -> Result<MasterKey, StartError> {
    let Database::Sqlite(db_path) = &config.server.database;
    load_master_key(&config.server.master_key, true, db_path)
}

/// Checks the secrets a configuration points at, without creating anything: what
/// `jwksd check-config` adds to the configuration's own validation.
pub fn check_secrets(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let server = &config.server;
    let master_text = match &server.master_key {
        MasterKeySource::Inline(secret) => {
            Some((secret.expose().to_owned(), "server.master_key".to_owned()))
        }
        MasterKeySource::File(path) | MasterKeySource::Development(path) => {
            match std::fs::read_to_string(path) {
                Ok(text) => Some((text, path.display().to_string())),
                Err(_) if matches!(server.master_key, MasterKeySource::Development(_)) => None,
                Err(e) => {
                    problems.push(format!(
                        "cannot read the master key file {}: {e}",
                        path.display()
                    ));
                    None
                }
            }
        }
    };
    if let Some((text, origin)) = master_text {
        if let Err(e) = MasterKey::from_text(&text) {
            problems.push(format!("the master key from {origin} is not usable: {e}"));
        }
    }
    if let AdminTokenSource::File(path) = &server.admin_token {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().len() >= 32 => {}
            Ok(_) => problems.push(format!(
                "the admin token in {} is shorter than 32 characters",
                path.display()
            )),
            Err(e) => problems.push(format!(
                "cannot read the admin token file {}: {e}",
                path.display()
            )),
        }
    }
    problems
}

/// Where the admin token file of a data directory lives (for the CLI's convenience).
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}
