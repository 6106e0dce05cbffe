//! `jwksd audit verify`: the store's audit chain and key rows checked offline, with the
//! master key the configuration names.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::config::{Config, Database};
use crate::keys::MasterKey;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Recomputes the chain and authenticates the key rows; names the first bad record.
pub async fn verify(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref(), std::env::vars())?;
    let (store, master): (Box<dyn Store>, Arc<MasterKey>) = match &config.server.database {
        Database::Sqlite(path) => {
            if !path.exists() {
                bail!("there is no key store at {}", path.display());
            }
            // The master key authenticates the key rows and the chain's head.
            let master = Arc::new(crate::app::read_master_key(&config)?);
            let store = SqliteStore::open(path, false, Some(master.clone())).await?;
            (Box::new(store), master)
        }
        Database::Postgres(url) => {
            let opening = PgStore::connect(url.expose()).await?;
            if opening.is_fresh() {
                bail!(
                    "there is no key store in the PostgreSQL database {}",
                    url.redacted()
                );
            }
            let master = Arc::new(crate::app::read_master_key(&config)?);
            (
                Box::new(opening.finish(Some(master.clone())).await?),
                master,
            )
        }
    };
    let store = store.as_ref();
    if crate::keyring::is_legacy_store(store, &master).await? == Some(true) {
        let outcome = crate::trail::verify_chain_only(store).await;
        store.close().await?;
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
    let outcome = crate::trail::verify_store(store).await;
    let keys = store.load_keys().await;
    store.close().await?;
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
