//! `jwksd backup`: a consistent copy of the key store, taken while jwksd runs.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::Config;

/// Writes a copy of the configured store to `out`.
pub async fn backup(config: Option<PathBuf>, out: &Path) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref(), std::env::vars())?;
    let path = match &config.server.database {
        crate::config::Database::Sqlite(path) => path,
        crate::config::Database::Postgres(url) => bail!(
            "jwksd backup copies the SQLite store only; the store is the PostgreSQL database {}, \
             so back it up with PostgreSQL's own tools (pg_dump of the meta, keys and audit \
             tables, or the database's regular backups) and keep the master key apart from it",
            url.redacted()
        ),
    };
    if !path.exists() {
        bail!("there is no key store at {} to back up", path.display());
    }
    // An existing file or link at `out` is refused by `backup_to` itself, which creates
    // the file without following links: a check here would race and miss dangling links.
    // A copy needs no master key: the file is copied as it is, private halves sealed.
    let store = crate::store::sqlite::SqliteStore::open(path, false, None).await?;
    let copied = store.backup_to(out).await;
    crate::store::Store::close(&store).await?;
    copied?;
    println!("wrote {} (restore: stop jwksd, copy it to {}, remove {}-wal and {}-shm, start jwksd with the same master key)",
        out.display(), path.display(), path.display(), path.display());
    Ok(())
}
