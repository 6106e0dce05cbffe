//! `jwksd audit verify`: the store's audit chain and key rows checked offline, with the
//! master key the configuration names.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::config::Config;

/// Recomputes the chain and authenticates the key rows; names the first bad record.
pub async fn verify(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref(), std::env::vars())?;
    let crate::config::Database::Sqlite(path) = &config.server.database;
    if !path.exists() {
        bail!("there is no key store at {}", path.display());
    }
    // The master key authenticates the key rows and the chain's head.
    let master = std::sync::Arc::new(crate::app::read_master_key(&config)?);
    let store = crate::store::sqlite::SqliteStore::open(path, false, Some(master.clone())).await?;
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
