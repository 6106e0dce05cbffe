//! `jwksd serve` and `jwksd check-config`: the configuration loaded once, then either the
//! service started from it or what it resolves to printed (every key set, client and caller,
//! and where each secret comes from: the file's line, the variable, or the default; never
//! the secret).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::app::Application;
use crate::config::{show_duration, AdminTokenSource, Config, Database, MasterKeySource};

/// `jwksd serve`: runs the service until it is stopped. Installs the log in the configured
/// format (`main` leaves it to this command).
pub async fn serve(config: Option<PathBuf>, init: bool, upgrade_store: bool) -> anyhow::Result<()> {
    let mut config = Config::load(config.as_deref(), std::env::vars())?;
    crate::logging::init(config.server.log_format);
    config.server.initialize = init;
    config.server.upgrade_store = upgrade_store;
    let app = Application::build(config).await?;
    app.run_until_stopped().await?;
    Ok(())
}

/// `jwksd check-config`: validates without starting, and prints everything the
/// configuration resolves to (listeners, public URL, store, key sets, clients, callers) and
/// where each secret comes from, never a secret itself.
pub fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref(), std::env::vars())?;
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    for line in resolved(&config) {
        println!("{line}");
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

/// What `config` resolves to, one line per setting, key set, client and caller.
fn resolved(config: &Config) -> Vec<String> {
    let server = &config.server;
    let from = |path: &str| {
        config
            .provenance
            .of(path)
            .unwrap_or_else(|| "the default".to_owned())
    };
    let seconds = |s: i64| show_duration(Duration::from_secs(s.max(0) as u64));
    let mut lines = vec![
        format!("public listener:  {}", server.public_listen),
        format!("private listener: {}", server.private_listen),
        match &server.public_url {
            Some(url) => format!("public URL:       {url}"),
            None => "public URL:       (not set: admin answers give JWKS URLs as paths \
                     (/jwks/NAME.json), and `jwksd register` and `jwksd doctor` cannot name or \
                     check the URL the EHR fetches; set server.public_url to it)"
                .to_owned(),
        },
        format!("data directory:   {}", server.data_dir.display()),
        match &server.database {
            Database::Sqlite(path) => format!("store:            SQLite, {}", path.display()),
            Database::Postgres(url) => format!(
                "store:            PostgreSQL, {} (server.database_url from {})",
                url.redacted(),
                from("server.database_url")
            ),
        },
        match &server.master_key {
            MasterKeySource::Inline(_) => format!(
                "master key:       inline, from {}",
                from("server.master_key")
            ),
            MasterKeySource::File(path) => format!(
                "master key:       the file {} (server.master_key_file from {})",
                path.display(),
                from("server.master_key_file")
            ),
            MasterKeySource::Development(path) => format!(
                "master key:       the development file {} (made on first start; supply one \
                 from a secret manager in production)",
                path.display()
            ),
        },
        match &server.admin_token {
            AdminTokenSource::Inline(_) => format!(
                "admin token:      inline, kept only as its SHA-256, from {}",
                from("server.admin_token")
            ),
            AdminTokenSource::File(path) => format!(
                "admin token:      the file {} (server.admin_token_file from {})",
                path.display(),
                from("server.admin_token_file")
            ),
            AdminTokenSource::Generated(path) => format!(
                "admin token:      the file {} (generated on first start)",
                path.display()
            ),
        },
    ];
    for keyset in config.keysets.values() {
        let t = keyset.timing;
        lines.push(format!(
            "key set {}: {}, rotation_period {}, jwks_max_age {}, prepublish {}, retire_grace {}",
            keyset.name,
            keyset.alg,
            t.rotation_period.map_or("off".into(), seconds),
            seconds(t.jwks_max_age),
            seconds(t.prepublish),
            seconds(t.retire_grace)
        ));
    }
    for client in config.access.clients.values() {
        let endpoint = match &client.token_endpoint {
            Some(url) => format!("token endpoint {url}"),
            None => "token endpoint discovered from fhir_base_url".to_owned(),
        };
        let mut line = format!(
            "client {}: client_id {}, key set {}, {endpoint}, audiences {}",
            client.name,
            client.client_id,
            client.keyset,
            if client.audiences.is_empty() {
                "[the discovered token endpoint]".to_owned()
            } else {
                client.audiences.join(" ")
            }
        );
        if let Some(base) = &client.fhir_base_url {
            line.push_str(&format!(", fhir_base_url {base}"));
        }
        match &client.scope {
            Some(scope) => line.push_str(&format!(", scope {scope:?}")),
            None => line.push_str(", no default scope"),
        }
        match &client.allowed_scopes {
            Some(allowed) => line.push_str(&format!(", allowed scopes {:?}", allowed.join(" "))),
            None => line.push_str(", allowed scopes: any few system/ scopes"),
        }
        line.push_str(&format!(
            ", assertion lifetime {}",
            seconds(client.assertion_lifetime)
        ));
        lines.push(line);
    }
    for caller in config.access.callers.values() {
        let token_path = format!("callers.{}.token_sha256", caller.name);
        let token = match config.provenance.of(&token_path) {
            Some(place) => format!("token inline (token_sha256) in {place}"),
            None => format!(
                "token hash read from token_file (set in {})",
                from(&format!("callers.{}.token_file", caller.name))
            ),
        };
        lines.push(format!(
            "caller {}: clients {}, {} requests per minute, {token}",
            caller.name,
            if caller.clients.is_empty() {
                "(none)".to_owned()
            } else {
                caller.clients.join(" ")
            },
            caller.rate_limit_per_minute
        ));
    }
    lines
}
