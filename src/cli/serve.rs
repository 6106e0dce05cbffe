//! `jwksd serve` and `jwksd check-config`: the configuration loaded once, then either the
//! service started from it or what it resolves to printed.

use std::path::PathBuf;

use anyhow::bail;

use crate::app::Application;
use crate::config::Config;

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

/// `jwksd check-config`: validates without starting, and prints what the configuration
/// resolves to.
pub fn check_config(config: Option<PathBuf>) -> anyhow::Result<()> {
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
