//! Start-up integrity: what must hold of a store before jwksd publishes or signs with any
//! key in it.
//!
//! The store authenticates every key row and the audit head with a MAC under the master key
//! (see [`crate::store::key_row_mac_input`]), so these checks need trust nothing an attacker
//! with write access to the database, but without the master key, could have written:
//!
//! - the master-key check opens: this is the master key the store was made with;
//! - the audit chain verifies from genesis to its authenticated head;
//! - every key the audit trail says was generated is still there (a deleted row cannot hide);
//! - no configured key set lost its published keys, and none changed its algorithm;
//! - each key set has at most one current and one next key.
//!
//! Per-row checks (public half hashes to the kid, the private half is present exactly while
//! the key signs) run every time a snapshot is built; that the private half opens and
//! matches is checked there too, where it is unsealed (`apply::unseal`).

use std::collections::BTreeMap;

use tracing::warn;

use crate::audit;
use crate::config::KeysetConfig;
use crate::error::Error;
use crate::keys::{MasterKey, PublicJwk};
use crate::rotation::KeyState;
use crate::store::{Store, StoredKey};
use crate::trail;

const MASTER_CHECK_META: &str = "master_key_check";
const MASTER_CHECK_AAD: &[u8] = b"jwksd/master-key-check/v1";
/// Written by versions before key rows carried MACs.
const MASTER_CHECK_V1: &[u8] = b"jwksd master key check";
/// Says, under the master key, that every key row and the audit head carry MACs: a store
/// can never be made to look like an older one whose rows were not authenticated.
const MASTER_CHECK_V2: &[u8] = b"jwksd master key check/v2: key rows and audit head authenticated";

/// Whether a store was written before key rows carried MACs (its master-key check says
/// v1). `None` when the store holds no check or `master` does not open it.
pub async fn is_legacy_store(store: &dyn Store, master: &MasterKey) -> Result<Option<bool>, Error> {
    let Some(sealed) = store.meta(MASTER_CHECK_META).await? else {
        return Ok(None);
    };
    Ok(master
        .open(&sealed, MASTER_CHECK_AAD)
        .ok()
        .map(|plain| plain.as_slice() == MASTER_CHECK_V1))
}

/// Checks that `master` is the store's master key; on a fresh store, records it. A store
/// written before rows were authenticated is upgraded only when the operator says so
/// (`upgrade`): its rows cannot be told from rows someone added, and an old check put back
/// from a backup must never make jwksd seal an attacker's row by itself.
pub(super) async fn check_master_key(
    store: &dyn Store,
    master: &MasterKey,
    fresh: bool,
    upgrade: bool,
) -> Result<(), Error> {
    match store.meta(MASTER_CHECK_META).await? {
        None if !fresh => Err(Error::Integrity(
            "the store holds no jwksd data although the file existed before this start \
             (emptied, truncated or replaced?). Restore it from a backup; to start a new \
             installation on purpose, delete the data directory"
                .into(),
        )),
        None => {
            let sealed = master.seal(MASTER_CHECK_V2, MASTER_CHECK_AAD);
            store.initialise(MASTER_CHECK_META, &sealed).await?;
            Ok(())
        }
        Some(sealed) => {
            let plain = master.open(&sealed, MASTER_CHECK_AAD).map_err(|_| {
                Error::Integrity(
                    "the store was encrypted under a different master key; start jwksd with \
                     the master key this store was created with (master_key_file or \
                     JWKSD_SERVER__MASTER_KEY)"
                        .into(),
                )
            })?;
            if plain.as_slice() == MASTER_CHECK_V1 {
                if !upgrade {
                    return Err(Error::Integrity(
                        "this store was written by a jwksd from before key rows carried MACs \
                         (or its master-key check was put back from such a backup). Check that \
                         `jwksd audit verify` passes and that this is the store you expect, then \
                         start once with `jwksd serve --upgrade-store` (JWKSD_UPGRADE_STORE=1) \
                         to authenticate every row as it is now"
                            .into(),
                    ));
                }
                let generated = generated_kids(store).await?;
                let sealed = master.seal(MASTER_CHECK_V2, MASTER_CHECK_AAD);
                let sealed_rows = store
                    .authenticate_legacy_rows(&generated, MASTER_CHECK_META, &sealed)
                    .await?;
                warn!(
                    rows = sealed_rows,
                    "upgraded the store: every key row and the audit head now carry a MAC under \
                     the master key"
                );
            }
            if upgrade && plain.as_slice() == MASTER_CHECK_V2 {
                return Err(Error::Integrity(
                    "--upgrade-store (JWKSD_UPGRADE_STORE) is set but this store's key rows are \
                     already authenticated; remove it, so that an old master-key check put back \
                     from a backup can never be upgraded without you"
                        .into(),
                ));
            }
            Ok(())
        }
    }
}

/// The checks over the whole store that run once at start.
pub(super) async fn check_store(
    store: &dyn Store,
    configs: &BTreeMap<String, KeysetConfig>,
    stored: &[StoredKey],
) -> Result<(), Error> {
    match trail::verify_store(store).await? {
        Ok(_) => {}
        Err(broken) => {
            return Err(Error::Integrity(format!(
                "the audit trail is broken ({broken}); records were edited or deleted. Restore \
                 the store from a backup (`jwksd audit verify` shows the same)"
            )))
        }
    }
    for key in stored {
        if let Some(config) = configs.get(&key.record.keyset) {
            if key.record.alg != config.alg && key.record.state.is_published() {
                return Err(Error::Integrity(format!(
                    "key set {:?} holds {} keys but is configured for {}; one key set has one \
                     algorithm. Put {} keys in a new key set (with its own JWKS URL) instead",
                    config.name, key.record.alg, config.alg, config.alg
                )));
            }
        }
    }
    if let Some(orphan) = stored
        .iter()
        .find(|k| k.record.state.is_published() && !configs.contains_key(&k.record.keyset))
    {
        let orphan = &orphan.record.keyset;
        return Err(Error::Integrity(format!(
            "the store holds published keys of key set {orphan:?}, which is not configured; \
             starting without it would unpublish keys EHRs may rely on. Add [keysets.{orphan}] \
             back to the configuration"
        )));
    }
    let generated = generated_kids(store).await?;
    let missing: Vec<&String> = generated
        .iter()
        .filter(|kid| !stored.iter().any(|k| &&k.record.kid == kid))
        .collect();
    if let Some(kid) = missing.first() {
        return Err(Error::Integrity(format!(
            "the audit trail records key {kid} (and {} more) that the store no longer holds: key \
             rows were deleted. Restore the store from a backup",
            missing.len() - 1
        )));
    }
    Ok(())
}

/// Every kid the audit trail says was generated.
async fn generated_kids(store: &dyn Store) -> Result<Vec<String>, Error> {
    let filter = audit::AuditFilter {
        event: Some(audit::event::KEY_GENERATED.into()),
        ..Default::default()
    };
    let mut kids = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_page(&filter, after, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(kids);
        };
        after = last.seq;
        kids.extend(page.into_iter().filter_map(|r| r.event.kid));
    }
}

/// A key set never holds two current or two next keys; the database forbids the first
/// with an index, this catches a store whose index was dropped too.
pub(super) fn check_keyset_states(keyset: &str, keys: &[&StoredKey]) -> Result<(), Error> {
    for state in [KeyState::Current, KeyState::Next] {
        let count = keys.iter().filter(|k| k.record.state == state).count();
        if count > 1 {
            return Err(Error::Integrity(format!(
                "key set {keyset:?} holds {count} {state} keys; there is never more than one. \
                 Restore the store from a backup"
            )));
        }
    }
    Ok(())
}

/// A key holds its private half exactly while it signs or will sign (next, current): the
/// half is erased in the transaction that retires or revokes the key.
pub(super) fn check_private_half(key: &StoredKey) -> Result<(), Error> {
    let signs = matches!(key.record.state, KeyState::Next | KeyState::Current);
    if !signs && key.sealed_private.is_some() {
        return Err(Error::Integrity(format!(
            "key {} is {} but the store holds its private half, which was erased when it \
             stopped signing; restore the store from a backup",
            key.record.kid, key.record.state
        )));
    }
    if signs && key.sealed_private.is_none() {
        return Err(Error::Integrity(format!(
            "key {} is {} but its private half is missing from the store; restore the store \
             from a backup",
            key.record.kid, key.record.state
        )));
    }
    Ok(())
}

/// The stored public key must hash to its kid: a kid is never reused for other material.
pub(super) fn verify_public(key: &StoredKey) -> Result<PublicJwk, Error> {
    let kid = &key.record.kid;
    let public = PublicJwk::from_stored_json(&key.public_jwk).ok_or_else(|| {
        Error::Integrity(format!(
            "the public key of {kid} in the store does not parse"
        ))
    })?;
    if &public.thumbprint() != kid {
        return Err(Error::Integrity(format!(
            "the public key stored for {kid} does not match its kid (RFC 7638 thumbprint); the \
             store was altered. Restore it from a backup"
        )));
    }
    Ok(public)
}
