//! The keyring: the in-memory, always-consistent view of every key set, and the one place
//! that changes keys.
//!
//! Reads (JWKS bytes, certificates, the current signer) come from an immutable
//! [`Snapshot`] behind an `Arc`, swapped whole after every change, so the JWKS path never
//! waits on a lock held across I/O and its bytes are rendered once per change. Writes
//! (tick, rotate, revoke) are serialised by one async mutex: each turns a pure decision from
//! [`crate::rotation`] into one [`Change`], applies it in one store transaction, then
//! swaps in the snapshot of what it committed. [`integrity`] holds the checks a store must
//! pass before any of its keys is used.

mod integrity;

pub use integrity::is_legacy_store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tracing::{error, info, warn};

use crate::audit::{self, AuditEvent};
use crate::config::KeysetConfig;
use crate::error::Error;
use crate::keys::cert;
use crate::keys::jwk::{Jwk, JwkSet};
use crate::keys::seal::private_key_aad;
use crate::keys::{KeyMaterial, MasterKey, PublicJwk};
use crate::rotation::{
    self, check_rotation, plan_revocation, KeyRecord, KeyState, RevocationRefused, RotationRefused,
    Step, UnixTime,
};
use crate::store::{Change, Store, StoredKey, Transition};

/// A key set's JWKS, rendered once per change.
#[derive(Debug)]
pub struct PublishedJwks {
    /// Shared, so serving it copies nothing.
    pub body: bytes::Bytes,
    /// A strong validator over `body` (RFC 9110 §8.8.3), quoted.
    pub etag: String,
    /// When the set next changes by itself; caps `max-age`.
    pub next_change_at: Option<UnixTime>,
    /// The configured `jwks_max_age`, in seconds.
    pub max_age_ceiling: i64,
}

impl PublishedJwks {
    /// The `max-age` to send at `now`.
    pub fn max_age(&self, now: UnixTime) -> i64 {
        rotation::jwks_max_age(now, self.next_change_at, self.max_age_ceiling)
    }
}

/// The key a key set signs with now.
#[derive(Debug)]
pub struct Signer {
    pub kid: String,
    pub key: KeyMaterial,
}

/// A published key's public parts.
#[derive(Debug)]
struct PublicEntry {
    public: PublicJwk,
    cert_der: Vec<u8>,
}

/// One key set as served.
#[derive(Debug)]
pub struct KeysetView {
    pub config: KeysetConfig,
    /// Every key of the set, oldest first.
    pub records: Vec<KeyRecord>,
    pub jwks: Arc<PublishedJwks>,
    pub signer: Option<Arc<Signer>>,
}

/// Everything readers need, consistent at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub keysets: BTreeMap<String, KeysetView>,
    /// PEM certificates of published keys, by kid.
    certs: HashMap<String, Arc<str>>,
}

impl Snapshot {
    pub fn cert_pem(&self, kid: &str) -> Option<Arc<str>> {
        self.certs.get(kid).cloned()
    }

    /// The record of `kid` in any configured key set.
    pub fn find_key(&self, kid: &str) -> Option<&KeyRecord> {
        self.keysets
            .values()
            .flat_map(|view| view.records.iter())
            .find(|r| r.kid == kid)
    }
}

/// What a rotation did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RotationOutcome {
    pub keyset: String,
    /// The key that signs from now on.
    pub promoted: String,
    /// The key that stopped signing (stays published through `retire_grace`).
    pub retired: Option<String>,
    /// The freshly published successor.
    pub new_next: Option<String>,
    pub forced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What a revocation did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RevocationOutcome {
    pub keyset: String,
    pub revoked: String,
    /// Set when the revoked key was current: the key promoted (forced) in its place.
    pub promoted: Option<String>,
    pub new_next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Who asked for a lifecycle change, for the audit trail.
struct Actor {
    name: &'static str,
    /// Facts about the request (forced, reason), as JSON text.
    detail: Option<String>,
}

impl Actor {
    fn scheduler() -> Self {
        Actor {
            name: "scheduler",
            detail: None,
        }
    }

    fn admin(detail: serde_json::Value) -> Self {
        Actor {
            name: "admin",
            detail: Some(detail.to_string()),
        }
    }
}

/// The custodian of all key sets.
pub struct Keyring {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    configs: BTreeMap<String, KeysetConfig>,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keysets", &self.configs.keys())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Loads and verifies every stored key, then brings each configured key set to a
    /// servable state (first start: a current and a next key).
    ///
    /// Refuses with [`Error::Integrity`] when the store was sealed under another master key,
    /// a key row or the audit trail was altered (see [`integrity`]), or a key set's stored
    /// keys use another algorithm than its configuration.
    ///
    /// `fresh` says the store was created by this start. A store that existed before must
    /// carry jwksd's master-key check and every key its audit trail says was generated;
    /// otherwise it was truncated, replaced or had rows deleted, and jwksd refuses rather
    /// than publish new keys in place of registered ones.
    pub async fn open(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        configs: BTreeMap<String, KeysetConfig>,
        fresh: bool,
        upgrade_store: bool,
        now: UnixTime,
    ) -> Result<Self, Error> {
        integrity::check_master_key(store.as_ref(), &master, fresh, upgrade_store).await?;
        let stored = store.load_keys().await?;
        integrity::check_store(store.as_ref(), &configs, &stored).await?;
        // A copy in the log, which the database cannot rewrite: the anchor against a rollback
        // of the whole store while jwksd was stopped.
        if let Some(head) = store.audit_head().await? {
            info!(seq = head.seq, hash = %head.hash, "audit trail verified up to its sealed head");
        }
        let keyring = Keyring {
            store,
            master,
            configs,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            writer: tokio::sync::Mutex::new(()),
        };
        keyring.rebuild(stored, now)?;
        let writer = keyring.writer.lock().await;
        let (_, failures) = keyring.apply_schedule(now).await?;
        drop(writer);
        if let Some((_, e)) = failures.into_iter().next() {
            return Err(e);
        }
        Ok(keyring)
    }

    /// The current snapshot; cheap, never blocks on writers.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn configs(&self) -> &BTreeMap<String, KeysetConfig> {
        &self.configs
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Every configured key set has a key that can sign.
    pub fn is_ready(&self) -> bool {
        let snapshot = self.snapshot();
        self.configs.keys().all(|name| {
            snapshot
                .keysets
                .get(name)
                .is_some_and(|v| v.signer.is_some())
        })
    }

    /// Applies the schedule at `now` to every key set. Returns the earliest moment any key
    /// set next changes by itself. The schedule is planned from what the store holds now
    /// (which also repairs a snapshot that drifted from it); a key set whose step fails is
    /// logged and retried within 30 s, and never keeps the others from their schedule.
    pub async fn tick(&self, now: UnixTime) -> Result<Option<UnixTime>, Error> {
        let _writer = self.writer.lock().await;
        let (next_change, failures) = self.apply_schedule(now).await?;
        if failures.is_empty() {
            return Ok(next_change);
        }
        for (keyset, e) in &failures {
            error!(keyset = %keyset, error = %e, "the key schedule of this key set could not be applied; retrying in 30s");
        }
        let retry = now + 30;
        Ok(Some(next_change.map_or(retry, |at| at.min(retry))))
    }

    /// The body of [`Keyring::tick`], under the writer lock: the earliest next change, and
    /// the key sets whose step failed.
    async fn apply_schedule(
        &self,
        now: UnixTime,
    ) -> Result<(Option<UnixTime>, Vec<(String, Error)>), Error> {
        let mut stored = self.store.load_keys().await?;
        self.rebuild(stored.clone(), now)?;
        let mut next_change: Option<UnixTime> = None;
        let mut failures = Vec::new();
        for (name, config) in &self.configs {
            let records = records_in(&stored, name);
            let plan = rotation::plan(&records, now, &config.timing);
            if !plan.steps.is_empty() {
                match self
                    .execute(config, &stored, &plan.steps, now, &Actor::scheduler())
                    .await
                {
                    Ok((created, after)) => {
                        info!(keyset = %name, steps = ?plan.steps, created = ?created, "applied the key schedule");
                        stored = after;
                    }
                    Err(e) => {
                        failures.push((name.clone(), e));
                        continue;
                    }
                }
            }
            if let Some(at) = plan.next_change_at {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
        }
        Ok((next_change, failures))
    }

    /// Promotes the published successor of `keyset`; see [`rotation::check_rotation`].
    pub async fn rotate(
        &self,
        keyset: &str,
        force: bool,
        now: UnixTime,
    ) -> Result<RotationOutcome, Error> {
        let config = self
            .configs
            .get(keyset)
            .ok_or_else(|| Error::UnknownKeyset(keyset.to_owned()))?;
        let _writer = self.writer.lock().await;
        let stored = self.store.load_keys().await?;
        let records = records_in(&stored, keyset);
        let steps = check_rotation(&records, now, &config.timing, force).map_err(|r| match r {
            RotationRefused::TooEarly {
                next_kid,
                published_for,
                retry_after,
            } => Error::RotationTooEarly {
                keyset: keyset.to_owned(),
                next_kid,
                published_for,
                prepublish: config.timing.prepublish,
                retry_after,
            },
            RotationRefused::NoNextKey => Error::NoNextKey(keyset.to_owned()),
        })?;
        let (promoted, retired) = match &steps[0] {
            Step::Promote { next, retire } => (next.clone(), retire.clone()),
            _ => unreachable!("check_rotation starts with a promotion"),
        };
        let published_for = records
            .iter()
            .find(|r| r.kid == promoted)
            .map_or(0, |r| now - r.published_at);
        let forced = published_for < config.timing.prepublish;
        let actor = Actor::admin(serde_json::json!({ "forced": forced }));
        let (created, _) = self.execute(config, &stored, &steps, now, &actor).await?;
        let warning = forced.then(|| forced_warning(&promoted, published_for, config));
        if forced {
            warn!(keyset, kid = %promoted, published_for, "forced rotation before prepublish elapsed");
        }
        info!(keyset, promoted = %promoted, retired = ?retired, new_next = ?created, "rotated");
        Ok(RotationOutcome {
            keyset: keyset.to_owned(),
            promoted,
            retired,
            new_next: created.into_iter().next(),
            forced,
            warning,
        })
    }

    /// Revokes `kid`: it leaves the JWKS at once and never signs again.
    pub async fn revoke(
        &self,
        kid: &str,
        reason: Option<&str>,
        now: UnixTime,
    ) -> Result<RevocationOutcome, Error> {
        let _writer = self.writer.lock().await;
        let stored = self.store.load_keys().await?;
        let keyset = stored
            .iter()
            .find(|k| k.record.kid == kid)
            .map(|k| k.record.keyset.clone())
            .ok_or_else(|| Error::UnknownKid(kid.to_owned()))?;
        let config = self
            .configs
            .get(&keyset)
            .ok_or_else(|| Error::UnknownKid(kid.to_owned()))?;
        let records = records_in(&stored, &keyset);
        let steps = plan_revocation(&records, kid).map_err(|r| match r {
            RevocationRefused::NotPublished(state) => Error::NotRevocable {
                kid: kid.to_owned(),
                state,
            },
        })?;
        let promoted = steps.iter().find_map(|s| match s {
            Step::Promote { next, .. } => Some(next.clone()),
            _ => None,
        });
        let promoted_age = promoted
            .as_ref()
            .and_then(|p| records.iter().find(|r| &r.kid == p))
            .map(|r| now - r.published_at);
        let forced = promoted_age.is_some_and(|age| age < config.timing.prepublish)
            || steps.contains(&Step::CreateCurrent);
        let actor = Actor::admin(serde_json::json!({ "forced": forced, "reason": reason }));
        let (created, _) = self.execute(config, &stored, &steps, now, &actor).await?;
        // A freshly made current key (no successor existed) is in `created` first.
        let (promoted, new_next) = if steps.contains(&Step::CreateCurrent) {
            (created.first().cloned(), created.get(1).cloned())
        } else {
            (promoted, created.first().cloned())
        };
        let warning = match (promoted_age, &promoted) {
            (Some(age), Some(kid)) if age < config.timing.prepublish => {
                Some(forced_warning(kid, age, config))
            }
            (None, Some(kid)) => Some(format!(
                "no published successor existed, so the new key {kid} signs at once; verifiers \
                 will reject its assertions until they refetch the JWKS (up to {}s)",
                config.timing.jwks_max_age
            )),
            _ => None,
        };
        warn!(keyset = %keyset, kid, promoted = ?promoted, "revoked");
        Ok(RevocationOutcome {
            keyset,
            revoked: kid.to_owned(),
            promoted,
            new_next,
            warning,
        })
    }

    /// Turns `steps` into one change with its audit records and applies it in one
    /// transaction to `stored` (what the store held when the steps were planned). Then
    /// swaps in the snapshot of exactly what was committed, computed from `stored` and the
    /// change rather than read back: once the commit returns, nothing can leave memory and
    /// disk disagreeing. Returns the kids it created and the keys as they are now.
    async fn execute(
        &self,
        config: &KeysetConfig,
        stored: &[StoredKey],
        steps: &[Step],
        now: UnixTime,
        actor: &Actor,
    ) -> Result<(Vec<String>, Vec<StoredKey>), Error> {
        let records = records_in(stored, &config.name);
        let mut change = Change::default();
        let event = |name: &str, kid: &str, detail: Option<String>| AuditEvent {
            time: now,
            event: name.to_owned(),
            caller: Some(actor.name.to_owned()),
            keyset: Some(config.name.clone()),
            kid: Some(kid.to_owned()),
            detail,
            ..AuditEvent::default()
        };
        let state_of = |kid: &str| {
            records
                .iter()
                .find(|r| r.kid == kid)
                .map(|r| r.state)
                .ok_or_else(|| Error::UnknownKid(kid.to_owned()))
        };
        let mut promoted_now = Vec::new();
        for step in steps {
            match step {
                Step::CreateCurrent | Step::CreateNext => {
                    let state = if step == &Step::CreateCurrent {
                        KeyState::Current
                    } else {
                        KeyState::Next
                    };
                    let key = self.generate(config, state, now).await?;
                    let detail =
                        serde_json::json!({ "state": state.as_str(), "alg": config.alg.as_str() });
                    change.events.push(event(
                        audit::event::KEY_GENERATED,
                        &key.record.kid,
                        Some(detail.to_string()),
                    ));
                    change.inserts.push(key);
                }
                Step::Promote { next, retire } => {
                    change.events.push(event(
                        audit::event::KEY_PROMOTED,
                        next,
                        actor.detail.clone(),
                    ));
                    if let Some(old) = retire {
                        change
                            .events
                            .push(event(audit::event::KEY_RETIRED, old, None));
                        change.transitions.push(Transition {
                            kid: old.clone(),
                            from: KeyState::Current,
                            to: KeyState::Retired,
                            at: now,
                            remove_at: Some(now + config.timing.retire_grace),
                        });
                    }
                    change.transitions.push(Transition {
                        kid: next.clone(),
                        from: KeyState::Next,
                        to: KeyState::Current,
                        at: now,
                        remove_at: None,
                    });
                    promoted_now.push(next.clone());
                }
                Step::Remove { kid } => {
                    change
                        .events
                        .push(event(audit::event::KEY_REMOVED, kid, None));
                    change.transitions.push(Transition {
                        kid: kid.clone(),
                        from: KeyState::Retired,
                        to: KeyState::Removed,
                        at: now,
                        remove_at: None,
                    });
                }
                Step::Revoke { kid } => {
                    change
                        .events
                        .push(event(audit::event::KEY_REVOKED, kid, actor.detail.clone()));
                    change.transitions.push(Transition {
                        kid: kid.clone(),
                        from: state_of(kid)?,
                        to: KeyState::Revoked,
                        at: now,
                        remove_at: None,
                    });
                }
            }
        }
        self.store.apply(&change).await?;
        let created = change
            .inserts
            .iter()
            .map(|k| k.record.kid.clone())
            .collect();
        let mut after = stored.to_vec();
        for transition in &change.transitions {
            if let Some(key) = after.iter_mut().find(|k| k.record.kid == transition.kid) {
                transition.apply_to(key);
            }
        }
        after.extend(change.inserts);
        self.rebuild(after.clone(), now)?;
        Ok((created, after))
    }

    /// Generates, certifies and seals a key on a blocking thread.
    async fn generate(
        &self,
        config: &KeysetConfig,
        state: KeyState,
        now: UnixTime,
    ) -> Result<StoredKey, Error> {
        let config = config.clone();
        let master = self.master.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let key = KeyMaterial::generate(config.alg, config.rsa_bits)?;
            let public = key.public_jwk();
            let kid = public.thumbprint();
            let issued = time::OffsetDateTime::from_unix_timestamp(now)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let cert_der = cert::self_signed(&key, &config.cert_subject, issued)?;
            let pkcs8 = key.to_pkcs8()?;
            let aad = private_key_aad(&kid, &config.name, config.alg.as_str());
            let sealed = master.seal(&pkcs8, &aad);
            Ok::<_, Error>(StoredKey {
                record: KeyRecord {
                    kid,
                    keyset: config.name.clone(),
                    alg: config.alg,
                    state,
                    created_at: now,
                    published_at: now,
                    activated_at: (state == KeyState::Current).then_some(now),
                    retired_at: None,
                    remove_at: None,
                    removed_at: None,
                    revoked_at: None,
                },
                public_jwk: public.to_stored_json(),
                cert_der,
                sealed_private: Some(sealed),
            })
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Verifies `stored` and swaps in a new snapshot built from it.
    fn rebuild(&self, stored: Vec<StoredKey>, now: UnixTime) -> Result<(), Error> {
        let mut by_keyset: BTreeMap<&str, Vec<&StoredKey>> = BTreeMap::new();
        for key in &stored {
            by_keyset.entry(&key.record.keyset).or_default().push(key);
        }
        let mut snapshot = Snapshot::default();
        for (name, config) in &self.configs {
            let keys = by_keyset.remove(name.as_str()).unwrap_or_default();
            integrity::check_keyset_states(name, &keys)?;
            let mut published = Vec::new();
            let mut signer = None;
            for key in &keys {
                let public = integrity::verify_public(key)?;
                let signs = matches!(key.record.state, KeyState::Next | KeyState::Current);
                if !signs && key.sealed_private.is_some() {
                    return Err(Error::Integrity(format!(
                        "key {} is {} but the store holds its private half, which was erased \
                         when it stopped signing; restore the store from a backup",
                        key.record.kid, key.record.state
                    )));
                }
                if signs && key.sealed_private.is_none() {
                    return Err(Error::Integrity(format!(
                        "key {} is {} but its private half is missing from the store; restore \
                         the store from a backup",
                        key.record.kid, key.record.state
                    )));
                }
                if let Some(sealed) = &key.sealed_private {
                    let material = self.unseal(key, sealed, &public)?;
                    if key.record.state == KeyState::Current {
                        signer = Some(Arc::new(Signer {
                            kid: key.record.kid.clone(),
                            key: material,
                        }));
                    }
                }
                if key.record.state.is_published() {
                    snapshot
                        .certs
                        .insert(key.record.kid.clone(), cert::to_pem(&key.cert_der).into());
                    published.push((
                        key.record.clone(),
                        PublicEntry {
                            public,
                            cert_der: key.cert_der.clone(),
                        },
                    ));
                }
            }
            let records: Vec<KeyRecord> = keys.iter().map(|k| k.record.clone()).collect();
            let next_change_at = rotation::plan(&records, now, &config.timing).next_change_at;
            let jwks = render_jwks(published, next_change_at, config.timing.jwks_max_age);
            snapshot.keysets.insert(
                name.clone(),
                KeysetView {
                    config: config.clone(),
                    records,
                    jwks: Arc::new(jwks),
                    signer,
                },
            );
        }
        let snapshot = Arc::new(snapshot);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        Ok(())
    }

    fn unseal(
        &self,
        key: &StoredKey,
        sealed: &[u8],
        public: &PublicJwk,
    ) -> Result<KeyMaterial, Error> {
        let r = &key.record;
        let aad = private_key_aad(&r.kid, &r.keyset, r.alg.as_str());
        let pkcs8 = self.master.open(sealed, &aad).map_err(|_| {
            Error::Integrity(format!(
                "the private key of {} (key set {}) does not decrypt: the row was altered or \
                 moved, or the master key is wrong. Restore the store from a backup",
                r.kid, r.keyset
            ))
        })?;
        let material = KeyMaterial::from_pkcs8(r.alg, &pkcs8)?;
        if &material.public_jwk() != public {
            return Err(Error::Integrity(format!(
                "the private key of {} does not match its published public key; restore the \
                 store from a backup",
                r.kid
            )));
        }
        Ok(material)
    }
}

/// The records of one key set, oldest first.
fn records_in(stored: &[StoredKey], keyset: &str) -> Vec<KeyRecord> {
    stored
        .iter()
        .filter(|k| k.record.keyset == keyset)
        .map(|k| k.record.clone())
        .collect()
}

fn forced_warning(kid: &str, published_for: i64, config: &KeysetConfig) -> String {
    format!(
        "{kid} was published only {published_for}s ago (prepublish is {}s): verifiers that cached \
         the JWKS before it appeared will reject its assertions until their cache expires (up to \
         {}s)",
        config.timing.prepublish, config.timing.jwks_max_age
    )
}

/// Renders the JWKS in a stable order: the current key, then next, then retired keys
/// (newest first), ties broken by kid.
fn render_jwks(
    mut published: Vec<(KeyRecord, PublicEntry)>,
    next_change_at: Option<UnixTime>,
    max_age_ceiling: i64,
) -> PublishedJwks {
    let rank = |s: KeyState| match s {
        KeyState::Current => 0,
        KeyState::Next => 1,
        _ => 2,
    };
    published.sort_by(|(a, _), (b, _)| {
        (rank(a.state), std::cmp::Reverse(a.created_at), &a.kid).cmp(&(
            rank(b.state),
            std::cmp::Reverse(b.created_at),
            &b.kid,
        ))
    });
    let set = JwkSet {
        keys: published
            .iter()
            .map(|(r, e)| Jwk::new(&e.public, &r.kid, r.alg, &e.cert_der))
            .collect(),
    };
    // Serialising plain strings cannot fail.
    let body = serde_json::to_vec(&set).unwrap_or_default();
    let hash = digest::digest(&digest::SHA256, &body);
    let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&hash.as_ref()[..18]));
    PublishedJwks {
        body: body.into(),
        etag,
        next_change_at,
        max_age_ceiling,
    }
}
