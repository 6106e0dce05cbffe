//! Starting jwksd in-process with a temporary data directory, on listeners bound to port 0
//! (never on a port found free and bound later), and a typed client for what the tests ask
//! of it; a guard that kills a child process when the test lets go of it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use jwksd::app::{Application, StartError, StartOptions};
use jwksd::config::Config;
use jwksd::keyring::Keyring;
use serde_json::Value;

pub struct TestApp {
    pub public: String,
    pub private: String,
    pub admin_token: String,
    pub keyring: Arc<Keyring>,
    /// The fetcher record (tests with invented fetch times record and flush through it).
    pub fetchers: Arc<jwksd::fetchers::FetcherLog>,
    pub http: reqwest::Client,
    stop: Option<[actix_web::dev::ServerHandle; 2]>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Loads a configuration the way `jwksd serve` does, with a data dir for a test and both
/// listeners on port 0 (the app binds them, so no port is chosen before it is bound), on the
/// backend of this run (see [`backend_env`]).
pub fn test_config(data_dir: &Path, toml: &str) -> Result<Config, jwksd::config::ConfigError> {
    let path = data_dir.join("test-config.toml");
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&path, toml).unwrap();
    let mut env = vec![
        (
            "JWKSD_SERVER__PUBLIC_LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "JWKSD_SERVER__PRIVATE_LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "JWKSD_SERVER__DATA_DIR".to_owned(),
            data_dir.join("data").display().to_string(),
        ),
    ];
    env.extend(backend_env(data_dir));
    Config::load(Some(&path), env)
}

/// The variable that puts the suite on PostgreSQL: a URL of a server where the tests may
/// create databases (`scripts/test` starts one with `scripts/pg`). Unset: SQLite.
pub const POSTGRES_VAR: &str = "JWKSD_TEST_POSTGRES";

fn postgres_base() -> Option<String> {
    std::env::var(POSTGRES_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Whether this run is on PostgreSQL.
pub fn on_postgres() -> bool {
    postgres_base().is_some()
}

/// For a test about SQLite itself (its files, modes, WAL, rows edited in the file): true,
/// with a note, when the run is on PostgreSQL, and the test then returns at once.
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        eprintln!("SQLite only ({what}): not run on PostgreSQL");
        return true;
    }
    false
}

/// For a test about several jwksd on one database: true, with a note, when the run is on
/// SQLite (one jwksd per store), and the test then returns at once.
pub fn postgres_only(what: &str) -> bool {
    if !on_postgres() {
        eprintln!("PostgreSQL only ({what}): not run on SQLite");
        return true;
    }
    false
}

/// Starts a second jwksd, with its own data directory `dir`, on the database of the test in
/// `first` (PostgreSQL runs only) and with `first`'s master key: a replica, as a second
/// machine behind the load balancer would run it. `toml` must not have a `[server]` table.
pub async fn spawn_replica(first: &Path, dir: &Path, toml: &str) -> TestApp {
    let url = database_url(first).expect("replicas share a PostgreSQL database");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("postgres-database-url"), url).unwrap();
    let toml = format!(
        "{toml}\n[server]\nmaster_key_file = \"{}\"\n",
        first.join("data/master.key").display()
    );
    spawn_app_with(dir, &toml).await
}

/// The database of the test whose directory is `dir`, on PostgreSQL runs: made on first use
/// (a fresh database with a random name, left for the throwaway server to drop) and the same
/// for every later start of that test, as a data directory is. `None` on SQLite.
pub fn database_url(dir: &Path) -> Option<String> {
    let base = postgres_base()?;
    let record = dir.join("postgres-database-url");
    if let Ok(url) = std::fs::read_to_string(&record) {
        return Some(url);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "jwksd_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        nanos % 1_000_000_000
    );
    let maintenance = base.clone();
    let created = name.clone();
    // Its own runtime on its own thread: callers are sync, inside a test's runtime.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&maintenance).await.unwrap();
            sqlx::raw_sql(&format!("CREATE DATABASE {created}"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        })
    })
    .join()
    .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    let url = url.to_string();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&record, &url).unwrap();
    Some(url)
}

/// The variables that put a jwksd started for the test in `dir` (in-process or as a child
/// process) on this run's backend: none on SQLite, `JWKSD_SERVER__DATABASE_URL` on
/// PostgreSQL.
pub fn backend_env(dir: &Path) -> Vec<(String, String)> {
    database_url(dir)
        .map(|url| vec![("JWKSD_SERVER__DATABASE_URL".to_owned(), url)])
        .into_iter()
        .flatten()
        .collect()
}

/// Runs `statements` directly against the store of the test in `dir`, as someone with write
/// access to the database would: the SQLite file, or the test's PostgreSQL database.
pub async fn run_sql(dir: &Path, statements: &[&str]) {
    if let Some(url) = database_url(dir) {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        for statement in statements {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
        return;
    }
    let db = dir.join("data/jwksd.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// A listener bound to a port the kernel picked, for a test that needs jwksd's URL before
/// jwksd starts: the test keeps the port for as long as it holds the listener, then hands
/// the listener itself to [`Launch::public`].
pub fn loopback_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// `http://` and the address of `listener`.
pub fn url_of(listener: &std::net::TcpListener) -> String {
    format!("http://{}", listener.local_addr().unwrap())
}

/// A key set configuration for tests that are not about RSA: EC keys are made in
/// microseconds, an RSA key in a noticeable fraction of a second.
pub const EC_DEFAULT: &str = "[keysets.default]\nalg = \"ES256\"\n";

/// A clock the test moves: the wall clock plus an offset in seconds.
#[derive(Clone, Default)]
pub struct TestClock(Arc<std::sync::atomic::AtomicI64>);

impl TestClock {
    pub fn advance(&self, seconds: i64) {
        self.0
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn clock(&self) -> jwksd::Clock {
        let offset = self.0.clone();
        Arc::new(move || jwksd::unix_now() + offset.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// How a test starts jwksd beyond its configuration.
#[derive(Default)]
pub struct Launch {
    /// A listener the test bound already (see [`loopback_listener`]); else port 0.
    pub public: Option<std::net::TcpListener>,
    /// The clock of the token cache.
    pub clock: TestClock,
    /// The test calls `keyring.tick` itself: the app's scheduler loop must not run too.
    pub without_scheduler: bool,
}

/// Starts jwksd as `launch` says.
pub async fn launch(dir: &Path, toml: &str, launch: Launch) -> TestApp {
    let config = test_config(dir, toml).expect("test config is valid");
    let options = StartOptions {
        clock: launch.clock.clock(),
        public_listener: launch.public,
        private_listener: None,
        scheduler: !launch.without_scheduler,
    };
    match Application::build_with(config, options).await {
        Ok(app) => into_test_app(app),
        Err(e) => panic!("jwksd did not start: {e}"),
    }
}

/// Starts jwksd serving its public listener on `public` and the token cache on `clock`.
pub async fn spawn_app_on(
    dir: &Path,
    toml: &str,
    public: std::net::TcpListener,
    clock: &TestClock,
) -> TestApp {
    let options = Launch {
        public: Some(public),
        clock: clock.clone(),
        ..Launch::default()
    };
    launch(dir, toml, options).await
}

/// As [`spawn_app_with`], without the background scheduler: for tests that drive
/// `keyring.tick` themselves.
pub async fn spawn_app_unscheduled(dir: &Path, toml: &str) -> TestApp {
    let options = Launch {
        without_scheduler: true,
        ..Launch::default()
    };
    launch(dir, toml, options).await
}

/// Builds the application on `dir` without starting it, to observe start-up refusals.
pub async fn try_build(dir: &Path, toml: &str) -> Result<Application, StartError> {
    Application::build(test_config(dir, toml).expect("test config is valid")).await
}

pub async fn spawn_app(dir: &Path) -> TestApp {
    spawn_app_with(dir, "").await
}

pub async fn spawn_app_with(dir: &Path, toml: &str) -> TestApp {
    let app = match try_build(dir, toml).await {
        Ok(app) => app,
        Err(e) => panic!("jwksd did not start: {e}"),
    };
    into_test_app(app)
}

pub fn into_test_app(app: Application) -> TestApp {
    let public = format!("http://{}", app.public_addr());
    let private = format!("http://{}", app.private_addr());
    // The service keeps only the token's hash; the tests read it where a CLI would.
    let admin_token = std::fs::read_to_string(app.admin_token_file().expect("an admin token file"))
        .expect("the admin token file")
        .trim()
        .to_owned();
    let keyring = app.keyring();
    let fetchers = app.fetchers();
    let stop = Some(app.stop_handles());
    let task = Some(tokio::spawn(app.run_until_stopped()));
    TestApp {
        public,
        private,
        admin_token,
        keyring,
        fetchers,
        http: http_client(),
        stop,
        task,
    }
}

/// A plain HTTP client for talking to jwksd (no redirects followed).
pub fn http_client() -> reqwest::Client {
    jwksd::tokens::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestApp {
    /// Stops both listeners and waits until they are closed.
    pub async fn stop(mut self) {
        if let Some(handles) = self.stop.take() {
            for handle in handles {
                handle.stop(true).await;
            }
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub async fn get_public(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.public))
            .send()
            .await
            .unwrap()
    }

    pub async fn jwks(&self, keyset: &str) -> Value {
        let response = self.get_public(&format!("/jwks/{keyset}.json")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn kids(&self, keyset: &str) -> Vec<String> {
        self.jwks(keyset).await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.private))
            .bearer_auth(&self.admin_token)
    }

    pub async fn keys(&self, keyset: &str) -> Vec<Value> {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/v1/keysets/{keyset}/keys"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["keys"].as_array().unwrap().clone()
    }

    /// The kid of the key in `state` (newest one).
    pub async fn kid_in_state(&self, keyset: &str, state: &str) -> Option<String> {
        self.keys(keyset)
            .await
            .into_iter()
            .find(|k| k["state"] == state)
            .map(|k| k["kid"].as_str().unwrap().to_owned())
    }

    pub async fn rotate(&self, keyset: &str, force: bool) -> reqwest::Response {
        let query = if force { "?force=true" } else { "" };
        self.admin(
            reqwest::Method::POST,
            &format!("/admin/v1/keysets/{keyset}/rotate{query}"),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn revoke(&self, kid: &str) -> reqwest::Response {
        self.admin(
            reqwest::Method::POST,
            &format!("/admin/v1/keys/{kid}/revoke"),
        )
        .send()
        .await
        .unwrap()
    }
}

/// Asserts that `response` is an RFC 9457 problem with `status`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// A child process that is killed (SIGKILL) and reaped when the handle drops, also when
/// the test panics, so no jwksd, node or python3 outlives its test.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Both fail harmlessly on a child already reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a child writes to one of its pipes, collected by a thread as it arrives, so a test
/// can read the log while the child runs (a pipe nobody reads would also block the child).
pub struct Captured {
    bytes: Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Captured {
    pub fn start(mut pipe: impl std::io::Read + Send + 'static) -> Captured {
        let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Captured {
            bytes,
            reader: Some(reader),
        }
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Everything, once the child has closed the pipe (it has exited).
    pub fn finish(mut self) -> Vec<u8> {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

/// The (public, private) addresses from the newest "jwksd is listening" line of `log`: the
/// addresses the process really bound, which is how a test learns the ports of a jwksd
/// started on `127.0.0.1:0`. Reads the text and the JSON log format.
pub fn listening_addrs(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("jwksd is listening"))?;
    let line = strip_ansi(line);
    let field = |name: &str| -> Option<SocketAddr> {
        let start = line.find(name)? + name.len();
        let value: String = line[start..]
            .trim_start_matches(['=', '"', ':'])
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | ',' | '}'))
            .collect();
        value.parse().ok()
    };
    Some((field("public_addr")?, field("private_addr")?))
}

/// `text` without terminal colour sequences (`ESC [ ... m`), which the text log has.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the jwksd `child` has logged where it listens (`log` reads what it wrote so
/// far); fails the test at once if it exits first, with what it logged.
pub async fn wait_until_listening(
    child: &mut std::process::Child,
    log: impl Fn() -> String,
) -> (SocketAddr, SocketAddr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(addrs) = listening_addrs(&log()) {
            return addrs;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("jwksd exited ({status}) before listening: {}", log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jwksd did not report its listeners within 30 s: {}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether the test in `dir` has a store: the SQLite file, or jwksd's tables in its
/// PostgreSQL database.
pub async fn store_exists(dir: &Path) -> bool {
    match database_url(dir) {
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let exists: bool = sqlx::query_scalar("SELECT to_regclass('meta') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            exists
        }
        None => dir.join("data/jwksd.db").exists(),
    }
}

/// Deletes the store of the test in `dir` and nothing else (the master key stays): the
/// SQLite files, or jwksd's tables.
pub async fn delete_store(dir: &Path) {
    if on_postgres() {
        run_sql(
            dir,
            &["DROP TABLE meta, keys, audit, fetchers, fetcher_kids"],
        )
        .await;
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("data/jwksd.db{suffix}")));
    }
}
