//! `jwksd audit verify`: the store's audit chain and key rows checked offline, with the
//! master key the configuration names. `jwksd audit list` and `jwksd audit export`: the
//! trail of a running service through the admin API, as a table or as JSON lines.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::client::Client;
use super::{AdminArgs, AuditFilterArgs};
use crate::api::{AuditEntry, AuditQuery};

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
    let head = store.audit_head().await;
    store.close().await?;
    let count = match outcome.context("the store's seal failed verification")? {
        Ok(count) => count,
        Err(broken) => bail!("audit trail broken: {broken}"),
    };
    let keys = keys.context("the key rows failed verification")?;
    let head = head.context("the audit head could not be read")?;
    println!(
        "audit trail intact: {count} records verified; {} key rows authenticated",
        keys.len()
    );
    match head {
        Some(head) => println!("head: record {}, hash {}", head.seq, head.hash),
        None => println!("head: no record yet"),
    }
    Ok(())
}

/// How much of the trail `audit list` shows when `--since` is not given.
const LIST_DEFAULT_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The most records the admin API returns per page.
const PAGE: u32 = 1000;

/// `--since` as the admin API takes it: RFC 3339 as given, or an age (`24h`) counted back
/// from now.
fn since_time(
    since: Option<&str>,
    default_age: Option<std::time::Duration>,
) -> anyhow::Result<Option<String>> {
    let age = match since {
        None => match default_age {
            None => return Ok(None),
            Some(age) => age,
        },
        Some(text) if text.contains('T') || text.contains('-') => return Ok(Some(text.to_owned())),
        Some(text) => humantime::parse_duration(text.trim()).with_context(|| {
            format!("--since {text:?} is neither an RFC 3339 time (2026-11-28T00:00:00Z) nor an age (24h, 7d)")
        })?,
    };
    let at = crate::unix_now() - age.as_secs() as i64;
    crate::rfc3339(at).map(Some).with_context(|| {
        format!(
            "--since: {} ago is before any time RFC 3339 can write",
            humantime::format_duration(age)
        )
    })
}

fn query(filter: &AuditFilterArgs, since: Option<String>) -> AuditQuery {
    AuditQuery {
        since,
        client: filter.client.clone(),
        caller: filter.caller.clone(),
        kid: filter.kid.clone(),
        event: filter.event.clone(),
        cursor: None,
        limit: Some(PAGE),
    }
}

/// Reads pages from `query` on, handing each record to `each` until it returns false or
/// the trail ends; returns whether records were left unread.
async fn read_pages(
    client: &Client,
    mut query: AuditQuery,
    mut each: impl FnMut(&AuditEntry) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    loop {
        let page = client.audit_page(&query).await?;
        for record in &page.records {
            if !each(record)? {
                return Ok(true);
            }
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(false),
        }
    }
}

/// `jwksd audit list`: a table, or the records as a JSON array with `--json`.
pub async fn list(admin: &AdminArgs, filter: AuditFilterArgs, limit: usize) -> anyhow::Result<()> {
    let client = admin.client()?;
    let since = since_time(filter.since.as_deref(), Some(LIST_DEFAULT_AGE))?;
    let shown_since = since.clone();
    let mut records = Vec::new();
    let more = read_pages(&client, query(&filter, since), |record| {
        if records.len() == limit {
            return Ok(false);
        }
        records.push(record.clone());
        Ok(true)
    })
    .await?;
    if admin.json {
        println!("{}", super::client::pretty(&records)?);
        return Ok(());
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!(
        "{:>6} {:<20} {:<17} {:<12} {:<20} {:<44}",
        "SEQ", "TIME", "EVENT", "CALLER", "CLIENT", "KID"
    );
    for r in &records {
        println!(
            "{:>6} {:<20} {:<17} {:<12} {:<20} {:<44}",
            r.seq,
            dash(&r.time),
            r.event,
            dash(&r.caller),
            dash(&r.client_id),
            dash(&r.kid),
        );
    }
    let from = shown_since.unwrap_or_else(|| "the start".to_owned());
    if more {
        eprintln!(
            "{} records from {from} shown; more follow (--limit, --since, or `jwksd audit export`)",
            records.len()
        );
    } else {
        eprintln!("{} records from {from}", records.len());
    }
    Ok(())
}

/// `jwksd audit export`: every matching record as one JSON object per line.
pub async fn export(admin: &AdminArgs, filter: AuditFilterArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = admin.client()?;
    let since = since_time(filter.since.as_deref(), None)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    read_pages(&client, query(&filter, since), |record| {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
        Ok(true)
    })
    .await?;
    out.flush()?;
    Ok(())
}
