//! The one place that wires jwksd together: data directory, master key, store, keyring,
//! both listeners, the scheduler and, on PostgreSQL, the follower that keeps this process's
//! keys in step with what other jwksd processes commit to the shared database. `main` and
//! the integration tests both start the service through [`Application::build_with`]
//! ([`Application::build`] is it with the defaults), so they run the same thing; the tests
//! only hand over listeners they bound themselves, a clock, and whether the scheduler runs
//! ([`StartOptions`]).
//!
//! Start-up refuses, with a message that says what to do, rather than start "healthy" on a
//! fresh key set where one existed before: a missing store beside an existing master key,
//! a store without its master key, a damaged store, or the wrong master key.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::KeepAlive;
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use tracing::{error, info, warn};

use secrecy::ExposeSecret;

use crate::config::{
    AdminTokenSource, Config, Database, DatabaseUrl, MasterKeySource, SecretDigests,
};
use crate::http::limits::BodyPolicy;
use crate::http::state::{Metrics, TokenHash};
use crate::http::{self, State};
use crate::keyring::Keyring;
use crate::keys::MasterKey;
use crate::signing::SigningService;
use crate::store::metered::{MeteredStore, StoreErrors};
use crate::store::postgres::{KeyChanges, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::tls::ListenerTls;
use crate::tokens::TokenService;
use crate::trail::AuditWriter;

/// Why jwksd would not start. Each message names the file or setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] crate::store::sqlite::OpenError),
    #[error(transparent)]
    Postgres(#[from] crate::store::postgres::OpenError),
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

/// How a service is started beyond its configuration: what `main` never changes and
/// tests (or an embedding program) need to. Not a configuration key: nothing here is
/// visible to an operator.
pub struct StartOptions {
    /// The clock the token cache reads (tests move it).
    pub clock: crate::Clock,
    /// Listeners already bound by the caller, used instead of binding
    /// `server.public_listen` / `server.private_listen`. A test that must know jwksd's URL
    /// before jwksd starts binds port 0 first and hands the listener over, so no port is
    /// ever chosen before it is bound.
    pub public_listener: Option<std::net::TcpListener>,
    pub private_listener: Option<std::net::TcpListener>,
    /// Whether [`Application::run_until_stopped`] runs the key scheduler and, on PostgreSQL,
    /// the follower of other replicas' changes (`follow_the_database`). Tests that
    /// drive [`Keyring::tick`] themselves turn it off, so neither applies the schedule nor
    /// rebuilds the snapshot at the real time between their steps.
    pub scheduler: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: crate::system_clock(),
            public_listener: None,
            private_listener: None,
            scheduler: true,
        }
    }
}

/// A built, bound, not yet running service.
pub struct Application {
    public_addr: SocketAddr,
    private_addr: SocketAddr,
    keyring: Arc<Keyring>,
    tokens: Arc<TokenService>,
    reloader: Arc<Reloader>,
    admin_token_file: Option<PathBuf>,
    public_server: Server,
    private_server: Server,
    scheduler: bool,
    /// On PostgreSQL: the store, to listen for other processes' key changes, and how often
    /// to re-read the keys regardless.
    follower: Option<(PgStore, Duration)>,
    /// The fetcher record, flushed to the store in the background and once at shutdown.
    fetchers: Arc<crate::fetchers::FetcherLog>,
    /// The HTTPS of each listener that has it, re-read while serving (see `tls`).
    tls: Vec<Arc<ListenerTls>>,
    /// Held while the service runs: one jwksd per SQLite store (see [`lock_store`]).
    /// PostgreSQL takes any number of jwksd processes.
    _store_lock: Option<std::fs::File>,
}

impl Application {
    /// Opens everything and binds both listeners (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with(config, StartOptions::default()).await
    }

    /// As [`Application::build`], with the options `main` leaves at their defaults.
    pub async fn build_with(config: Config, options: StartOptions) -> Result<Self, StartError> {
        let StartOptions {
            clock,
            public_listener,
            private_listener,
            scheduler,
        } = options;
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
        let public_listener = match public_listener {
            Some(listener) => listener,
            None => bind("server.public_listen", &server.public_listen)?,
        };
        let private_listener = match private_listener {
            Some(listener) => listener,
            None => bind("server.private_listen", &server.private_listen)?,
        };
        let open_tls = |files: &Option<crate::config::TlsFiles>| {
            files
                .as_ref()
                .map(|files| {
                    let tls = ListenerTls::open(files)?;
                    // An expiring or expired certificate is said in the log, not refused:
                    // refusing to start would take the JWKS down for every EHR, while the
                    // files can be replaced under a running jwksd.
                    tls.log_expiry(crate::unix_now());
                    let rustls = tls.server_config()?;
                    Ok::<_, crate::tls::TlsError>((Arc::new(tls), rustls))
                })
                .transpose()
                .map_err(|e| StartError::Refused(format!("cannot serve HTTPS: {e}")))
        };
        let public_tls = open_tls(&server.public_tls)?;
        let private_tls = open_tls(&server.private_tls)?;
        let tls: Vec<Arc<ListenerTls>> = [&public_tls, &private_tls]
            .into_iter()
            .flatten()
            .map(|(tls, _)| tls.clone())
            .collect();
        let http_client = crate::tokens::outbound_client().map_err(|e| {
            StartError::Refused(format!("cannot set up the outbound HTTP client: {e}"))
        })?;
        ensure_dir(&server.data_dir)?;
        // A generated token is written only once the store opened: a refused start leaves
        // nothing behind.
        let admin_token = load_admin_token(&server.admin_token)?;
        let admin_token_file = server.admin_token.file().map(Path::to_path_buf);
        // Shared by the store wrapper that counts them and `/metrics` that shows them.
        let store_errors = Arc::new(StoreErrors::default());
        let (keyring, store_lock, follower) = match &server.database {
            Database::Sqlite(db_path) => {
                let (keyring, lock) = open_sqlite(&config, db_path, &store_errors).await?;
                (keyring, Some(lock), None)
            }
            Database::Postgres(url) => {
                let (keyring, store) = open_postgres(&config, url, &store_errors).await?;
                (keyring, None, Some((store, server.poll_interval)))
            }
        };
        let keyring = Arc::new(keyring);
        let admin_hash = admin_token.write_if_generated()?;

        let audit = AuditWriter::start(keyring.store().clone());
        let metrics = Metrics {
            store_errors,
            audit: audit.metrics(),
            ..Metrics::default()
        };
        // The fetcher record is made first, so the token service can read it as evidence
        // when it classifies a refused token request.
        let fetcher_log = Arc::new(crate::fetchers::FetcherLog::new(keyring.store().clone()));
        let tokens = Arc::new(
            TokenService::new(http_client, clock).with_jwks_fetch_record(fetcher_log.clone()),
        );
        let state = web::Data::new(
            State::new(
                keyring.clone(),
                admin_hash,
                server.public_url.as_ref(),
                config.access.clone(),
                Arc::new(SigningService::new(keyring.clone(), audit)),
                tokens.clone(),
            )
            .with_fetchers(fetcher_log)
            .with_trusted_proxies(server.trusted_proxies.clone())
            .with_metrics(metrics)
            .with_tls(tls.clone()),
        );
        let fetchers = state.fetchers.clone();
        let reloader = Reloader {
            state: state.clone(),
            running: config.clone(),
            // Read now, after a first start has written what it generates.
            secrets: server.secret_digests(),
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
                // Outermost: it must hold an unread body across whatever answer the inner
                // layers make, including the problems `ensure_problem` rewrites.
                .wrap(ErrorHandlers::new().default_handler(http::problem::ensure_problem))
                .wrap(from_fn(http::limits::guard_body))
                // Outside even that: the id and the log line cover every answer, and an
                // error from any layer is turned into its response inside the request's scope.
                .wrap(from_fn(http::requests::log_request))
                .app_data(public_body.clone())
                .app_data(public_state.clone())
                .configure(http::common)
                .configure(http::public::routes)
                .configure(http::health::routes)
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
        // A handshake is a head too: no client holds a slot by starting one slowly.
        .tls_handshake_timeout(limits.header_timeout);
        let public = match &public_tls {
            Some((_, rustls)) => public.listen_rustls_0_23(public_listener, rustls.clone()),
            None => public.listen(public_listener),
        }
        .map_err(|source| StartError::Bind {
            what: "server.public_listen",
            addr: server.public_listen.clone(),
            source,
        })?;
        let public_addr = public.addrs()[0];

        let private_state = state.clone();
        let private = HttpServer::new(move || {
            App::new()
                // Outermost: it must hold an unread body across whatever answer the inner
                // layers make, including the problems `ensure_problem` rewrites.
                .wrap(ErrorHandlers::new().default_handler(http::problem::ensure_problem))
                .wrap(from_fn(http::limits::guard_body))
                // Outside even that: the id and the log line cover every answer, and an
                // error from any layer is turned into its response inside the request's scope.
                .wrap(from_fn(http::requests::log_request))
                .app_data(private_body.clone())
                .app_data(private_state.clone())
                .configure(http::common)
                .configure(http::admin::routes)
                .configure(http::assertions::routes)
                .configure(http::tokens::routes)
                .configure(http::metrics::routes)
                .configure(http::health::routes)
                .configure(http::status::routes)
                .default_service(web::to(http::not_found))
        })
        .workers(workers.min(2))
        .max_connections(per_worker(workers.min(2)))
        .client_request_timeout(limits.header_timeout)
        // One request per connection, as on the public listener: a request head comes
        // before any authentication, and actix-http times only a connection's first one.
        // Internal callers pay a loopback or LAN connection per request (and, with TLS, a
        // resumed handshake); that is small beside an RSA signature.
        .keep_alive(KeepAlive::Disabled)
        .client_disconnect_timeout(Duration::from_secs(1))
        .tls_handshake_timeout(limits.header_timeout);
        let private = match &private_tls {
            Some((_, rustls)) => private.listen_rustls_0_23(private_listener, rustls.clone()),
            None => private.listen(private_listener),
        }
        .map_err(|source| StartError::Bind {
            what: "server.private_listen",
            addr: server.private_listen.clone(),
            source,
        })?;
        let private_addr = private.addrs()[0];
        info!(
            %public_addr,
            %private_addr,
            public_https = public_tls.is_some(),
            private_https = private_tls.is_some(),
            keysets = %config.keysets.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
            "jwksd is listening"
        );

        Ok(Application {
            public_addr,
            private_addr,
            keyring,
            tokens,
            reloader: Arc::new(reloader),
            admin_token_file,
            public_server: public.run(),
            private_server: private.run(),
            scheduler,
            follower,
            fetchers,
            tls,
            _store_lock: store_lock,
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

    /// The fetcher record this service keeps (see [`crate::fetchers`]).
    pub fn fetchers(&self) -> Arc<crate::fetchers::FetcherLog> {
        self.fetchers.clone()
    }

    pub fn token_service(&self) -> Arc<TokenService> {
        self.tokens.clone()
    }

    /// The file the admin token was read from or generated into; `None` when it came inline
    /// (the service itself keeps only the token's SHA-256).
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_token_file.as_deref()
    }

    /// Re-reads clients and callers; see [`Reloader`].
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Handles that stop both listeners (graceful when `stop(true)`).
    pub fn stop_handles(&self) -> [actix_web::dev::ServerHandle; 2] {
        [self.public_server.handle(), self.private_server.handle()]
    }

    /// Serves until SIGINT/SIGTERM (graceful) and runs the key scheduler and, on PostgreSQL,
    /// the follower of the database meanwhile (unless [`StartOptions::scheduler`] turned them
    /// off).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let keyring = self.keyring.clone();
        let run = self.scheduler;
        let scheduler = tokio::spawn(async move {
            if run {
                run_scheduler(keyring).await;
            }
        });
        let follower = match (&self.follower, run) {
            (Some((store, poll)), true) => Some(tokio::spawn(follow_the_database(
                self.keyring.clone(),
                store.watch_key_changes(),
                *poll,
            ))),
            _ => None,
        };
        let fetcher_flusher = tokio::spawn(crate::fetchers::run_flusher(self.fetchers.clone()));
        let reloads = tokio::spawn(reload_on_sighup(self.reloader.clone(), self.tls.clone()));
        let tls_watch = (!self.tls.is_empty()).then(|| {
            tokio::spawn(crate::tls::watch(
                self.tls.clone(),
                crate::tls::POLL_INTERVAL,
                crate::tls::EXPIRY_RECHECK,
            ))
        });
        let audit_heads = tokio::spawn(log_audit_head(self.keyring.clone(), AUDIT_HEAD_EVERY));
        let protocol_errors = tokio::spawn(crate::logging::summarize_protocol_errors(
            Duration::from_secs(60),
        ));
        let result = tokio::try_join!(self.public_server, self.private_server);
        scheduler.abort();
        if let Some(follower) = &follower {
            follower.abort();
        }
        reloads.abort();
        if let Some(tls_watch) = &tls_watch {
            tls_watch.abort();
        }
        protocol_errors.abort();
        audit_heads.abort();
        let _ = scheduler.await;
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        fetcher_flusher.abort();
        let _ = fetcher_flusher.await;
        // What the last seconds' fetches left in memory (a failure is logged by `flush`).
        let _ = self.fetchers.flush(crate::unix_now()).await;
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
    /// The secrets the service started with, to notice a rotated file (same name).
    secrets: SecretDigests,
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
        let mut changed = self.running.server.changed_keys(&config.server);
        for key in self.secrets.changed_keys(&config.server.secret_digests()) {
            if !changed.contains(&key) {
                changed.push(key);
            }
        }
        if !changed.is_empty() {
            warnings.push(format!(
                "[server] changes take effect at the next restart (changed: {})",
                changed.join(", ")
            ));
        }
        self.state.set_access(config.access);
        Ok(warnings)
    }
}

/// On SIGHUP: the configuration's clients and callers (see [`Reloader`]), and every
/// listener's TLS files, whether the configuration reloads or not.
#[cfg(unix)]
async fn reload_on_sighup(reloader: Arc<Reloader>, tls: Vec<Arc<ListenerTls>>) {
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
        for listener in &tls {
            listener.reload_and_log(crate::tls::SIGHUP);
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_: Arc<Reloader>, _: Vec<Arc<ListenerTls>>) {}

/// How often the audit head is written to the log when no key event wrote it sooner.
const AUDIT_HEAD_EVERY: Duration = Duration::from_secs(3600);

/// Writes the audit trail's sealed head (sequence number and hash) to the log after every
/// key event, and at least every `every`, so that a log shipper holds copies the database
/// cannot rewrite: a store rolled back to an older copy, or a chain rewritten together
/// with its seal, no longer matches the last head shipped. Key events are noticed as a
/// change of any key set's JWKS (every key event changes what is published), looked for
/// once a second, whichever jwksd made them. Runs until aborted.
async fn log_audit_head(keyring: Arc<Keyring>, every: Duration) {
    const LOOK: Duration = Duration::from_secs(1);
    let published = |keyring: &Keyring| -> Vec<String> {
        let snapshot = keyring.snapshot();
        snapshot
            .keysets
            .values()
            .map(|view| view.jwks.etag.clone())
            .collect()
    };
    let mut seen = published(&keyring);
    let mut due = tokio::time::Instant::now() + every;
    loop {
        tokio::time::sleep(LOOK).await;
        let now = published(&keyring);
        let key_event = now != seen;
        if !key_event && tokio::time::Instant::now() < due {
            continue;
        }
        let why = if key_event { "key event" } else { "scheduled" };
        match keyring.store().audit_head().await {
            Ok(Some(head)) => {
                info!(seq = head.seq, hash = %head.hash, after = why, "audit head");
            }
            Ok(None) => info!(seq = 0, after = why, "audit head: the trail is empty"),
            Err(e) => {
                warn!(error = %e, "cannot read the audit head; trying again in a minute");
                seen = now;
                due = tokio::time::Instant::now() + Duration::from_secs(60);
                continue;
            }
        }
        seen = now;
        due = tokio::time::Instant::now() + every;
    }
}

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

/// The follower of a database shared with other jwksd processes: re-reads the keys (see
/// [`Keyring::reload`]) whenever `changes` reports a committed key change, and every `poll`
/// regardless, because notifications are lost while the listener's connection is down. A
/// change therefore reaches this process's JWKS within `poll` (plus one re-read), usually
/// within moments. A failed re-read keeps the keys loaded before; it is logged when it
/// starts failing (and when the reason changes), and when it works again.
async fn follow_the_database(keyring: Arc<Keyring>, changes: KeyChanges, poll: Duration) {
    let mut failing: Option<String> = None;
    loop {
        tokio::select! {
            () = changes.changed() => {}
            () = tokio::time::sleep(poll) => {}
        }
        match keyring.reload(crate::unix_now()).await {
            Ok(()) => {
                if failing.take().is_some() {
                    info!("re-reading the keys from the database works again");
                }
            }
            Err(e) => {
                let reason = e.to_string();
                if failing.as_deref() != Some(reason.as_str()) {
                    let storage =
                        matches!(&e, crate::error::Error::Store(s) if s.is_storage_failure());
                    if storage {
                        warn!(error = %reason, "cannot re-read the keys from the database; serving the keys loaded before and retrying");
                    } else {
                        error!(error = %reason, "the keys in the database fail verification; serving the keys loaded before");
                    }
                    failing = Some(reason);
                }
            }
        }
    }
}

/// The SQLite store at `db_path` and its keyring: the lock file, the all-or-nothing first
/// start under a temporary name, then the store opened in place.
async fn open_sqlite(
    config: &Config,
    db_path: &Path,
    store_errors: &Arc<StoreErrors>,
) -> Result<(Keyring, std::fs::File), StartError> {
    let server = &config.server;
    if let Some(parent) = db_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent)?;
    }
    let store_lock = lock_store(db_path)?;
    finish_interrupted_first_start(db_path, &server.master_key)?;
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
    let name = db_path.display().to_string();
    let master = if store_exists {
        Arc::new(load_master_key(&server.master_key, true, &name)?)
    } else {
        let master = initialise_store(config, db_path).await?;
        info!(path = %db_path.display(), "created a new key store");
        master
    };
    let store = SqliteStore::open(db_path, false, Some(master.clone())).await?;
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(Arc::new(store), store_errors.clone()));
    let keyring = Keyring::open(
        store,
        master,
        config.keysets.clone(),
        false,
        server.upgrade_store,
        crate::unix_now(),
    )
    .await?;
    Ok((keyring, store_lock))
}

/// The PostgreSQL store at `url` and its keyring. Several jwksd processes may share the
/// database (no lock file). A first start is one transaction: the schema, the master-key
/// check and the first keys of every key set are committed together, after the development
/// master key (if one is generated) is on disk; a crash before the commit leaves the
/// database as it was.
async fn open_postgres(
    config: &Config,
    url: &DatabaseUrl,
    store_errors: &Arc<StoreErrors>,
) -> Result<(Keyring, PgStore), StartError> {
    let metered = |store: &PgStore| -> Arc<dyn Store> {
        Arc::new(MeteredStore::new(
            Arc::new(store.clone()),
            store_errors.clone(),
        ))
    };
    let server = &config.server;
    let name = url.redacted();
    let opening = PgStore::connect(url.expose()).await?;
    if !opening.is_fresh() {
        let master = Arc::new(load_master_key(&server.master_key, true, &name)?);
        let store = opening
            .finish(Some(master.clone()))
            .await
            .map_err(crate::error::Error::from)?;
        let keyring = Keyring::open(
            metered(&store),
            master,
            config.keysets.clone(),
            false,
            server.upgrade_store,
            crate::unix_now(),
        )
        .await?;
        return Ok((keyring, store));
    }
    let external_key = !matches!(server.master_key, MasterKeySource::Development(_));
    if external_key && !server.initialize {
        return Err(StartError::Refused(format!(
            "the PostgreSQL database {name} holds no jwksd store. With an external master key \
             jwksd does not create one by itself: an empty database usually means a wrong \
             database_url, and a fresh key set would break every registered integration. If \
             this is the first start, run `jwksd serve --init` (or set JWKSD_INIT=1) once"
        )));
    }
    let (master, key_to_write) = match &server.master_key {
        MasterKeySource::Development(path) if !path.exists() => {
            let (key, text) = MasterKey::generate();
            (Arc::new(key), Some((path.clone(), text)))
        }
        source => (Arc::new(load_master_key(source, false, &name)?), None),
    };
    let store = opening
        .finish(Some(master.clone()))
        .await
        .map_err(crate::error::Error::from)?;
    let keyring = Keyring::open(
        metered(&store),
        master,
        config.keysets.clone(),
        true,
        false,
        crate::unix_now(),
    )
    .await?;
    if let Some((path, text)) = key_to_write {
        write_secret_file(&path, &text).map_err(|e| {
            StartError::Refused(format!(
                "cannot write the development master key {}: {e}",
                path.display()
            ))
        })?;
        warn!(
            path = %path.display(),
            "generated a development master key; in production supply it from a secret \
             manager (server.master_key_file or JWKSD_SERVER__MASTER_KEY_FILE), the same for \
             every jwksd on this database"
        );
    }
    store
        .commit_first_start()
        .await
        .map_err(crate::error::Error::from)?;
    info!(database = %name, "created a new key store");
    Ok((keyring, store))
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

/// Takes the store's lock file (`<store>.lock`), held for the life of the process, so a
/// second jwksd on the same store refuses instead of racing the first (two first starts
/// would remove each other's `<store>.init`; two schedulers would plan the same step). The
/// kernel releases it when the process dies, so a crash never leaves it stale.
fn lock_store(db_path: &Path) -> Result<std::fs::File, StartError> {
    let path = sibling(db_path, ".lock");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| {
        StartError::Refused(format!("cannot open the lock file {}: {e}", path.display()))
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Refused(format!(
            "another jwksd is running on the store {} (it holds {}); stop it first, or give \
             this one its own server.data_dir",
            db_path.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StartError::Refused(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Where a first start builds the store before it is moved into place.
fn init_path(db_path: &Path) -> PathBuf {
    sibling(db_path, ".init")
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A first start writes the development master key only once the new store is complete
/// (at `<store>.init`), then moves the store into place. A crash between the two leaves the
/// key and the complete store beside each other: finish the move.
fn finish_interrupted_first_start(
    db_path: &Path,
    source: &MasterKeySource,
) -> Result<(), StartError> {
    let init = init_path(db_path);
    let MasterKeySource::Development(key_path) = source else {
        return Ok(());
    };
    if db_path.exists() || !init.exists() || !key_path.exists() {
        return Ok(());
    }
    move_into_place(&init, db_path)?;
    warn!(path = %db_path.display(), "completed a first start that was interrupted after the new store was made");
    Ok(())
}

/// The first start, all or nothing: the store is built and filled (master-key check, the
/// first keys of every key set) under a temporary name, closed, and only then renamed into
/// place. The development master key is written just before the rename. A crash at any
/// moment leaves either no store (the next start begins again) or a complete one, never a
/// half-made store that every later start would refuse.
async fn initialise_store(config: &Config, db_path: &Path) -> Result<Arc<MasterKey>, StartError> {
    let init = init_path(db_path);
    // A leftover from an interrupted first start never held a key anyone has seen.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let leftover = sibling(&init, suffix);
        if leftover.exists() {
            std::fs::remove_file(&leftover).map_err(|e| {
                StartError::Refused(format!(
                    "cannot remove {} left by an interrupted first start: {e}; remove it by hand",
                    leftover.display()
                ))
            })?;
        }
    }
    let (master, key_to_write) = match &config.server.master_key {
        MasterKeySource::Development(path) if !path.exists() => {
            let (key, text) = MasterKey::generate();
            (Arc::new(key), Some((path.clone(), text)))
        }
        source => (
            Arc::new(load_master_key(
                source,
                false,
                &db_path.display().to_string(),
            )?),
            None,
        ),
    };
    let store = SqliteStore::open(&init, true, Some(master.clone())).await?;
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let keyring = Keyring::open(
        shared,
        master.clone(),
        config.keysets.clone(),
        true,
        false,
        crate::unix_now(),
    )
    .await;
    // The file alone must hold the whole store before it is renamed: merge the WAL first
    // (closing would too, but only when the last connection happens to notice it is last).
    let flushed = match &keyring {
        Ok(_) => store.flush().await,
        Err(_) => Ok(()),
    };
    let closed = store.close().await;
    drop(keyring?);
    flushed.and(closed).map_err(crate::error::Error::from)?;
    let wal = sibling(&init, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(StartError::Refused(format!(
            "the new store's journal {} was not merged when it was closed; remove {} and start again",
            wal.display(),
            init.display()
        )));
    }
    if let Some((path, text)) = key_to_write {
        write_secret_file(&path, &text).map_err(|e| {
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
    }
    move_into_place(&init, db_path)?;
    Ok(master)
}

/// Renames `from` to `to` and syncs the directory, so the rename survives a power cut.
fn move_into_place(from: &Path, to: &Path) -> Result<(), StartError> {
    let failed = |e: std::io::Error| {
        StartError::Refused(format!(
            "cannot move the new store {} to {}: {e}",
            from.display(),
            to.display()
        ))
    };
    std::fs::rename(from, to).map_err(failed)?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(from, suffix));
    }
    if let Some(dir) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

/// Removes `<path>.tmp-*` left by a process killed while writing `path`: they hold a secret
/// that was never used.
fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `contents` to a new file readable only by its owner, all or nothing: it is
/// written and synced under a temporary name, then linked to `path` (which fails if `path`
/// exists), so a crash never leaves an empty or partial secret at `path`.
fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    remove_stale_temporaries(path);
    let temp = sibling(path, &format!(".tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    linked?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

/// The master key `source` names; `store` is where the store is, for messages.
fn load_master_key(
    source: &MasterKeySource,
    store_exists: bool,
    store: &str,
) -> Result<MasterKey, StartError> {
    let parse = |text: &str, origin: String| {
        MasterKey::from_text(text).map_err(|e| {
            StartError::Refused(format!("the master key from {origin} is not usable: {e}"))
        })
    };
    match source {
        MasterKeySource::Inline(secret) => {
            parse(secret.expose_secret(), "server.master_key".into())
        }
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
                    store,
                    path.display()
                ))),
                (false, true) => Err(StartError::Refused(format!(
                    "the key store {} exists but its master key {} is missing. Restore the master \
                     key file, or set server.master_key_file / JWKSD_SERVER__MASTER_KEY to where it is",
                    store,
                    path.display()
                ))),
                (false, false) => Err(StartError::Refused(format!(
                    "there is neither a key store at {} nor a master key at {}",
                    store,
                    path.display()
                ))),
            }
        }
    }
}

/// The admin token as start-up reads it: its hash, and for a token generated now, the file
/// still to write (after the store opened, so that a refused start writes nothing).
struct AdminToken {
    hash: TokenHash,
    to_write: Option<(PathBuf, zeroize::Zeroizing<String>)>,
}

impl AdminToken {
    fn ready(hash: TokenHash) -> Self {
        AdminToken {
            hash,
            to_write: None,
        }
    }

    /// Writes a generated token to its file, and returns the hash.
    fn write_if_generated(self) -> Result<TokenHash, StartError> {
        if let Some((path, token)) = &self.to_write {
            write_secret_file(path, token).map_err(|e| {
                StartError::Refused(format!(
                    "cannot write the admin token {}: {e}",
                    path.display()
                ))
            })?;
            info!(
                path = %path.display(),
                "generated an admin token; the CLI reads it from there (or from JWKSD_ADMIN_TOKEN)"
            );
        }
        Ok(self.hash)
    }
}

/// The admin token's hash, from wherever the configuration says it is; the token itself is
/// dropped (and wiped) once hashed, or once written when it is generated now.
fn load_admin_token(source: &AdminTokenSource) -> Result<AdminToken, StartError> {
    match source {
        AdminTokenSource::Inline(sha256) => Ok(AdminToken::ready(TokenHash::from_sha256(*sha256))),
        AdminTokenSource::File(path) => {
            let text = read_secret_file(path, "admin token")?;
            let token = zeroize::Zeroizing::new(text.trim().to_owned());
            if token.len() < 32 {
                return Err(StartError::Refused(format!(
                    "the admin token in {} is shorter than 32 characters; put a long random token there",
                    path.display()
                )));
            }
            Ok(AdminToken::ready(TokenHash::of(&token)))
        }
        AdminTokenSource::Generated(path) => {
            if path.exists() {
                let text = read_secret_file(path, "admin token")?;
                let token = zeroize::Zeroizing::new(text.trim().to_owned());
                if token.len() < 32 {
                    return Err(StartError::Refused(format!(
                        "the generated admin token {} is empty or short (an interrupted first \
                         start?); delete it and jwksd generates a new one",
                        path.display()
                    )));
                }
                return Ok(AdminToken::ready(TokenHash::of(&token)));
            }
            let token = zeroize::Zeroizing::new(crate::random_token());
            Ok(AdminToken {
                hash: TokenHash::of(&token),
                to_write: Some((path.clone(), token)),
            })
        }
    }
}

/// The master key of an existing store, as the configuration names it; never creates one
/// (for the CLI's offline commands, such as `jwksd audit verify`).
pub fn read_master_key(config: &Config) -> Result<MasterKey, StartError> {
    let store = match &config.server.database {
        Database::Sqlite(db_path) => db_path.display().to_string(),
        Database::Postgres(url) => url.redacted(),
    };
    load_master_key(&config.server.master_key, true, &store)
}

/// Checks the secrets a configuration points at, without creating anything: what
/// `jwksd check-config` adds to the configuration's own validation.
pub fn check_secrets(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let server = &config.server;
    let master_text = match &server.master_key {
        MasterKeySource::Inline(secret) => Some((
            zeroize::Zeroizing::new(secret.expose_secret().to_owned()),
            "server.master_key".to_owned(),
        )),
        MasterKeySource::File(path) | MasterKeySource::Development(path) => {
            match std::fs::read_to_string(path) {
                Ok(text) => Some((zeroize::Zeroizing::new(text), path.display().to_string())),
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
