//! The command line: `serve`, the container probe, and small clients of a running
//! service's admin API. The doc comments are the `--help` text.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::app::Application;
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "jwksd",
    version,
    about = "Keeps, rotates and publishes the signing keys of SMART on FHIR backend integrations"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: the public JWKS listener and the private admin listener.
    Serve {
        /// TOML configuration file; without one, built-in defaults and JWKSD_ variables apply.
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
        /// Create a new key store on this first start although the master key is external
        /// (never needed with the development master key in data_dir).
        #[arg(long, env = "JWKSD_INIT")]
        init: bool,
        /// Authenticate a store written by a jwksd from before key rows carried MACs (once,
        /// after checking `jwksd keys list` and `jwksd audit verify` show what you expect).
        #[arg(long, env = "JWKSD_UPGRADE_STORE")]
        upgrade_store: bool,
    },
    /// Validate the configuration and print what it resolves to, without starting.
    CheckConfig {
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a consistent copy of the key store to FILE (safe while jwksd runs). The copy
    /// holds only sealed private keys; back up the master key separately.
    Backup {
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
        /// Where to write the copy; must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Exit 0 when the service answers ready (for container health probes).
    Healthcheck {
        /// Readiness URL to probe (default: /readyz on the configured public listener).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect, rotate and revoke keys of a running service.
    Keys {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Get an access token for a client from the running service (prints the token).
    Token {
        /// The client (section name or client_id).
        #[arg(long)]
        client: String,
        /// Scopes to ask for (default: the client's configured scope).
        #[arg(long)]
        scope: Option<String>,
        /// Base URL of the private listener.
        #[arg(long, env = "JWKSD_SERVER", default_value = "http://127.0.0.1:8081")]
        server: String,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a client's whole path as the EHR sees it, and explain each failure.
    Doctor {
        #[arg(long)]
        client: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print (and with --out, write) what the vendor's portal asks for.
    Register {
        #[arg(long)]
        client: String,
        #[arg(long, value_enum, default_value = "generic")]
        vendor: crate::register::Vendor,
        /// Directory to write jwks.json, one PEM per key and a README for the ticket.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the bearer tokens of calling services.
    Callers {
        #[command(subcommand)]
        command: CallersCommand,
    },
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Base URL of the private (admin) listener.
    #[arg(
        long,
        env = "JWKSD_SERVER",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    server: String,
    /// File holding the admin token, when JWKSD_ADMIN_TOKEN is not set
    /// (default: data/admin.token, as written by `jwksd serve` on first start).
    #[arg(long, global = true)]
    admin_token_file: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List the keys of a key set, newest first.
    List {
        #[arg(long, default_value = "default")]
        keyset: String,
    },
    /// Promote the published next key; refused while it is younger than `prepublish`.
    Rotate {
        #[arg(long, default_value = "default")]
        keyset: String,
        /// Rotate even if the next key was published too recently (verifiers with a cached
        /// JWKS may reject new assertions until their cache expires).
        #[arg(long)]
        force: bool,
    },
    /// Take a key out of the JWKS at once; it never signs again.
    Revoke {
        kid: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain of the store's audit trail; names the first bad record.
    Verify {
        #[arg(long, env = "JWKSD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CallersCommand {
    /// Print a fresh 256-bit token and the SHA-256 to put in the configuration.
    NewToken,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            init,
            upgrade_store,
        } => {
            let mut config = Config::load(config.as_deref(), std::env::vars())?;
            config.server.initialize = init;
            config.server.upgrade_store = upgrade_store;
            let app = Application::build(config).await?;
            app.run_until_stopped().await?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            for warning in &config.warnings {
                println!("warning: {warning}");
            }
            println!("public listener:  {}", config.server.public_listen);
            println!("private listener: {}", config.server.private_listen);
            println!("data directory:   {}", config.server.data_dir.display());
            for keyset in config.keysets.values() {
                let t = keyset.timing;
                println!(
                    "key set {}: {} rotation_period={} jwks_max_age={}s prepublish={}s retire_grace={}s",
                    keyset.name,
                    keyset.alg,
                    t.rotation_period.map_or("off".into(), |p| format!("{p}s")),
                    t.jwks_max_age,
                    t.prepublish,
                    t.retire_grace
                );
            }
            let problems = crate::app::check_secrets(&config);
            if !problems.is_empty() {
                for problem in &problems {
                    println!("problem: {problem}");
                }
                bail!("the configuration refers to secrets jwksd cannot use");
            }
            println!("configuration is valid");
            Ok(())
        }
        Command::Backup { config, out } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            let crate::config::Database::Sqlite(path) = &config.server.database;
            if !path.exists() {
                bail!("there is no key store at {} to back up", path.display());
            }
            // An existing file or link at `out` is refused by `backup_to` itself, which creates
            // the file without following links: a check here would race and miss dangling links.
            // A copy needs no master key: the file is copied as it is, private halves sealed.
            let store = crate::store::sqlite::SqliteStore::open(path, false, None).await?;
            let copied = store.backup_to(&out).await;
            crate::store::Store::close(&store).await?;
            copied?;
            println!("wrote {} (restore: stop jwksd, copy it to {}, remove {}-wal and {}-shm, start jwksd with the same master key)",
                out.display(), path.display(), path.display(), path.display());
            Ok(())
        }
        Command::Healthcheck { url, config } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let config = Config::load(config.as_deref(), std::env::vars())?;
                    format!(
                        "http://{}/readyz",
                        local_address(&config.server.public_listen)
                    )
                }
            };
            let response = http_client()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("{url} did not answer"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                bail!("{url} answered {}", response.status())
            }
        }
        Command::Keys { admin, command } => keys(admin, command).await,
        Command::Token {
            client,
            scope,
            server,
            json,
        } => token(&client, scope, &server, json).await,
        Command::Doctor { client, admin } => {
            let api = admin_api(&admin)?;
            let outbound = crate::tokens::outbound_client()?;
            let checks = crate::doctor::diagnose(&api, &outbound, &client).await?;
            if admin.json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                crate::doctor::print(&checks);
            }
            let failed = checks
                .iter()
                .filter(|c| c.verdict == crate::doctor::Verdict::Fail)
                .count();
            if failed > 0 {
                bail!("{failed} check(s) failed");
            }
            Ok(())
        }
        Command::Register {
            client,
            vendor,
            out,
            admin,
        } => {
            let api = admin_api(&admin)?;
            let kit = crate::register::kit(&api, &client, vendor).await?;
            print!("{}", kit.text);
            if let Some(dir) = out {
                crate::register::write(&kit, &dir)?;
                eprintln!("wrote {} files to {}", kit.files.len(), dir.display());
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            let crate::config::Database::Sqlite(path) = &config.server.database;
            if !path.exists() {
                bail!("there is no key store at {}", path.display());
            }
            // The master key authenticates the key rows and the chain's head.
            let master = std::sync::Arc::new(crate::app::read_master_key(&config)?);
            let store =
                crate::store::sqlite::SqliteStore::open(path, false, Some(master.clone())).await?;
            if crate::keyring::is_legacy_store(&store, &master).await? == Some(true) {
                let outcome = crate::trail::verify_chain_only(&store).await;
                crate::store::Store::close(&store).await?;
                return match outcome? {
                    Ok(count) => {
                        println!(
                            "audit trail chain intact: {count} records verified. This store was \
                             written before key rows carried MACs, so its key rows and newest \
                             records cannot be authenticated; if this is the store you expect, \
                             start once with `jwksd serve --upgrade-store`"
                        );
                        Ok(())
                    }
                    Err(broken) => bail!("audit trail broken: {broken}"),
                };
            }
            let outcome = crate::trail::verify_store(&store).await;
            let keys = crate::store::Store::load_keys(&store).await;
            crate::store::Store::close(&store).await?;
            let count = match outcome.context("the store's seal failed verification")? {
                Ok(count) => count,
                Err(broken) => bail!("audit trail broken: {broken}"),
            };
            let keys = keys.context("the key rows failed verification")?;
            println!(
                "audit trail intact: {count} records verified; {} key rows authenticated",
                keys.len()
            );
            Ok(())
        }
        Command::Callers {
            command: CallersCommand::NewToken,
        } => {
            let token = crate::random_token();
            let hash = hex::encode(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
            );
            println!("# Give the token to the calling service; put only token_sha256 in jwksd's configuration.");
            println!("token:        {token}");
            println!("token_sha256: {hash}");
            Ok(())
        }
    }
}

/// The address a local client uses to reach a listener (`0.0.0.0` means this host).
pub fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_owned(),
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::tokens::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build an HTTP client")
}

fn admin_api(args: &AdminArgs) -> anyhow::Result<crate::doctor::AdminApi> {
    Ok(crate::doctor::AdminApi {
        base: crate::admin_url::server_url(&args.server),
        token: admin_token(args)?,
        http: http_client()?,
    })
}

/// `jwksd token`: asks the running service, as a caller, for an access token.
async fn token(
    client: &str,
    scope: Option<String>,
    server: &str,
    json: bool,
) -> anyhow::Result<()> {
    let caller_token = std::env::var("JWKSD_CALLER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context("set JWKSD_CALLER_TOKEN to a caller token allowed for this client (`jwksd callers new-token`)")?;
    let mut body = serde_json::json!({ "client_id": client });
    if let Some(scope) = scope {
        body["scope"] = Value::String(scope);
    }
    let url = format!("{}/v1/tokens", crate::admin_url::server_url(server));
    let response = http_client()?
        .post(&url)
        .bearer_auth(caller_token.trim())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach jwksd at {url}"))?;
    let status = response.status();
    let answer = crate::tokens::upstream::read_limited(
        response,
        crate::tokens::upstream::ADMIN_ANSWER_LIMIT,
    )
    .await
    .with_context(|| format!("jwksd's answer from {url}"))?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !status.is_success() {
        let mut message = format!(
            "{} ({status})",
            answer["detail"]
                .as_str()
                .unwrap_or("the token request failed")
        );
        if let Some(fix) = answer["fix"].as_str() {
            message.push_str(&format!("\n  fix: {fix}"));
        }
        if answer["error"].is_string() {
            message.push_str(&format!(
                "\n  upstream: {} {}",
                answer["error"].as_str().unwrap_or(""),
                answer["error_description"].as_str().unwrap_or("")
            ));
        }
        bail!(message);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", answer["access_token"].as_str().unwrap_or_default());
    }
    Ok(())
}

fn admin_token(args: &AdminArgs) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("JWKSD_ADMIN_TOKEN") {
        if !token.trim().is_empty() {
            return Ok(token.trim().to_owned());
        }
    }
    let path = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| crate::app::admin_token_path(std::path::Path::new("data")));
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .with_context(|| {
            format!(
                "no admin token: set JWKSD_ADMIN_TOKEN, or pass --admin-token-file ({} is not readable)",
                path.display()
            )
        })
}

/// Sends one admin request and returns the JSON answer, or the server's problem as error.
async fn admin_call(
    args: &AdminArgs,
    method: reqwest::Method,
    url: reqwest::Url,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let token = admin_token(args)?;
    let mut request = http_client()?
        .request(method, url.clone())
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.with_context(|| {
        format!("cannot reach jwksd at {url}; is it running? (--server, JWKSD_SERVER)")
    })?;
    let status = response.status();
    let text = crate::tokens::upstream::read_limited(
        response,
        crate::tokens::upstream::ADMIN_ANSWER_LIMIT,
    )
    .await
    .with_context(|| format!("jwksd's answer from {url}"))?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(json);
    }
    let detail = json
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("(no detail)");
    bail!("jwksd refused ({status}): {detail}")
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned()
}

async fn keys(args: AdminArgs, command: KeysCommand) -> anyhow::Result<()> {
    let answer = match &command {
        KeysCommand::List { keyset } => {
            let url = crate::admin_url::admin_url(&args.server, &["keysets", keyset, "keys"])?;
            admin_call(&args, reqwest::Method::GET, url, None).await?
        }
        KeysCommand::Rotate { keyset, force } => {
            let mut url =
                crate::admin_url::admin_url(&args.server, &["keysets", keyset, "rotate"])?;
            if *force {
                url.query_pairs_mut().append_pair("force", "true");
            }
            admin_call(&args, reqwest::Method::POST, url, None).await?
        }
        KeysCommand::Revoke { kid, reason } => {
            let url = crate::admin_url::admin_url(&args.server, &["keys", kid, "revoke"])?;
            let body = reason.as_ref().map(|r| serde_json::json!({ "reason": r }));
            admin_call(&args, reqwest::Method::POST, url, body).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match command {
        KeysCommand::List { .. } => {
            println!(
                "{:<44} {:<8} {:<6} {:<21} {:<21} {:<21}",
                "KID", "STATE", "ALG", "PUBLISHED", "ACTIVATED", "LEAVES JWKS"
            );
            for key in answer["keys"].as_array().into_iter().flatten() {
                println!(
                    "{:<44} {:<8} {:<6} {:<21} {:<21} {:<21}",
                    text(key, "kid"),
                    text(key, "state"),
                    text(key, "alg"),
                    text(key, "published_at"),
                    text(key, "activated_at"),
                    text(key, "remove_at"),
                );
            }
        }
        KeysCommand::Rotate { .. } => {
            println!("now signing:   {}", text(&answer, "promoted"));
            println!("retired:       {}", text(&answer, "retired"));
            println!("new next key:  {}", text(&answer, "new_next"));
        }
        KeysCommand::Revoke { .. } => {
            println!("revoked:       {}", text(&answer, "revoked"));
            if answer["promoted"].is_string() {
                println!("now signing:   {}", text(&answer, "promoted"));
            }
            println!("new next key:  {}", text(&answer, "new_next"));
        }
    }
    if let Some(warning) = answer.get("warning").and_then(Value::as_str) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
