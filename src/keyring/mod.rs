//! The keyring: the in-memory, always-consistent view of every key set, and the one place
//! that changes keys.
//!
//! Reads (JWKS bytes, certificates, the current signer) come from an immutable
//! [`Snapshot`] behind an `Arc`, swapped whole after every change, so the JWKS path never
//! waits on a lock held across I/O and its bytes are rendered once per change. Writes
//! (tick, rotate, revoke) are serialised by one async mutex: each turns a pure decision from
//! [`crate::rotation`] into one store change, applies it in one transaction, then swaps in
//! the snapshot of what it committed. On a store shared by several processes (PostgreSQL)
//! each operation's `now` follows the database's clock (see [`Keyring::with_local_clock`]),
//! and [`Keyring::reload`] follows what the others commit.
//!
//! This module holds the [`Keyring`] and its public operations; the parts are below it:
//! `integrity` (the checks a store must pass before any of its keys is used), `snapshot`
//! (the published snapshot and its JWKS rendering) and `apply` (steps into store changes,
//! key generation, sealing and unsealing).

mod apply;
mod integrity;
mod snapshot;

pub use integrity::is_legacy_store;
pub use snapshot::{KeysetView, PublishedJwks, Snapshot};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tracing::{error, info, warn};

use crate::config::KeysetConfig;
use crate::error::Error;
use crate::keys::MasterKey;
use crate::logging::HumanSeconds;
use crate::rotation::{
    self, check_rotation, plan_revocation, Forced, GateStatus, KeyRecord, Plan, RevocationRefused,
    RotationRefused, Step, UnixTime,
};
use crate::store::{Store, StoredKey};
use apply::{records_in, Actor};

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
    /// Recent fetchers that had not been served the promoted key at least `jwks_max_age`
    /// before (see [`crate::fetchers`]): the EHRs this rotation risks.
    pub unseen_by: Vec<String>,
}

/// When a key set next changes by itself, and where its fetch gate stands: for the admin
/// API, `jwksd keys list` and the status page.
#[derive(Clone, Debug)]
pub struct KeysetSchedule {
    /// When the scheduled rotation is due (in the past while it waits for fetch evidence);
    /// `None` for manual rotation only.
    pub next_rotation_at: Option<UnixTime>,
    /// When the next retired key leaves the JWKS.
    pub next_removal_at: Option<UnixTime>,
    pub gate: GateStatus,
}

/// Which door an admin's change came through, for the audit trail (`detail.via`): the
/// actor is `admin` either way, since both authenticate with the admin token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `/admin/v1` (and the CLI, which calls it).
    AdminApi,
    /// The status page's rotate and revoke forms.
    StatusPage,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::AdminApi => "admin_api",
            Via::StatusPage => "status_page",
        }
    }
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

/// Clock differences below this are not corrected: lifecycle times are whole seconds, and
/// two clocks read a moment apart differ by one now and then.
const MIN_CLOCK_SKEW: i64 = 2;

/// The custodian of all key sets.
pub struct Keyring {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    configs: BTreeMap<String, KeysetConfig>,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: tokio::sync::Mutex<()>,
    /// Counts the snapshots swapped in, so that [`Keyring::reload`], which reads the store
    /// without holding `writer`, can tell whether one was swapped in meanwhile.
    generation: AtomicU64,
    /// The clock the callers' `now` comes from, compared with the database's (see
    /// [`Keyring::with_local_clock`]).
    local_clock: crate::Clock,
    /// Whether a skew from the database's clock was logged already.
    skew_reported: AtomicBool,
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
    /// a key row or the audit trail was altered (see `integrity`), or a key set's stored
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
            generation: AtomicU64::new(0),
            local_clock: crate::system_clock(),
            skew_reported: AtomicBool::new(false),
        };
        let now = keyring.lifecycle_now(now).await?;
        keyring.rebuild(&stored, now)?;
        let writer = keyring.writer.lock().await;
        let (_, failures) = keyring.apply_schedule(now).await?;
        drop(writer);
        if let Some((_, e)) = failures.into_iter().next() {
            return Err(e);
        }
        Ok(keyring)
    }

    /// Says which clock the `now` arguments of this keyring's operations are read from (the
    /// system clock unless a test says otherwise). On a store with a clock of its own
    /// (PostgreSQL, shared by replicas) every operation compares the two once and, when they
    /// differ by 2 s or more, moves `now` onto the database's clock, so replicas whose clocks
    /// disagree make the same lifecycle decisions. A `now` that differs from the local clock
    /// (a test's invented time) keeps its difference.
    pub fn with_local_clock(mut self, clock: crate::Clock) -> Self {
        self.local_clock = clock;
        self
    }

    /// `now` on the database's clock; see [`Keyring::with_local_clock`]. Read once per
    /// operation (tick, change, reload).
    async fn lifecycle_now(&self, now: UnixTime) -> Result<UnixTime, Error> {
        let Some(database) = self.store.database_time().await? else {
            return Ok(now);
        };
        let skew = database - (self.local_clock)();
        if skew.abs() < MIN_CLOCK_SKEW {
            return Ok(now);
        }
        if !self.skew_reported.swap(true, Ordering::Relaxed) {
            warn!(
                skew = %HumanSeconds(skew),
                "this machine's clock differs from the database's; key lifecycle decisions follow the database's clock"
            );
        }
        Ok(now + skew)
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

    /// A MAC over `data` in the domain `purpose` under the key derived from the master key
    /// (see [`MasterKey::mac`]): how the HTTP layer authenticates short-lived values of its
    /// own (status-page sessions) so that every replica sharing the master key accepts them,
    /// without the master key leaving the keyring.
    pub fn master_mac(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        self.master.mac(purpose, data)
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
    /// On a store with its own clock the schedule is applied at the database's time, and the
    /// moment returned is on the caller's clock again (it is what the caller sleeps by).
    pub async fn tick(&self, now: UnixTime) -> Result<Option<UnixTime>, Error> {
        let _writer = self.writer.lock().await;
        let lifecycle_now = self.lifecycle_now(now).await?;
        let (next_change, failures) = self.apply_schedule(lifecycle_now).await?;
        let next_change = next_change.map(|at| at - (lifecycle_now - now));
        if failures.is_empty() {
            return Ok(next_change);
        }
        for (keyset, e) in &failures {
            error!(keyset = %keyset, error = %e, "the key schedule of this key set could not be applied; retrying in 30s");
        }
        let retry = now + 30;
        Ok(Some(next_change.map_or(retry, |at| at.min(retry))))
    }

    /// Re-reads every key from the store and swaps in the snapshot of what it holds, verified
    /// exactly as every load is (the store's row MACs and seal, then the snapshot's own
    /// checks), without applying the schedule: how a jwksd follows the changes other
    /// processes commit to a shared database. On any failure the snapshot served stays as it
    /// was.
    ///
    /// The store is read *without* the writer lock, so that a rotation or revocation never
    /// waits behind a re-read that is waiting for the database; the snapshot is swapped in
    /// under the lock, and only if no other snapshot was swapped in meanwhile (which might
    /// be newer than this read). If one was, the keys are read again under the lock, so a
    /// re-read never swaps in a state older than a change this process has just committed.
    pub async fn reload(&self, now: UnixTime) -> Result<(), Error> {
        let now = self.lifecycle_now(now).await?;
        let seen = self.generation.load(Ordering::SeqCst);
        let read = self.store.load_keys().await?;
        let _writer = self.writer.lock().await;
        let before = self.snapshot();
        let stored = if self.generation.load(Ordering::SeqCst) == seen {
            read
        } else {
            self.store.load_keys().await?
        };
        self.rebuild(&stored, now)?;
        let after = self.snapshot();
        for (name, view) in &after.keysets {
            let was = before.keysets.get(name).map(|v| v.jwks.etag.as_str());
            if was != Some(view.jwks.etag.as_str()) {
                info!(keyset = %name, etag = %view.jwks.etag, "the key set changed in the store (another jwksd changed it); serving its new JWKS");
            }
        }
        Ok(())
    }

    /// The body of [`Keyring::tick`], under the writer lock: the earliest next change, and
    /// the key sets whose step failed.
    async fn apply_schedule(
        &self,
        now: UnixTime,
    ) -> Result<(Option<UnixTime>, Vec<(String, Error)>), Error> {
        let mut stored = self.store.load_keys().await?;
        self.rebuild(&stored, now)?;
        let mut next_change: Option<UnixTime> = None;
        let mut failures = Vec::new();
        for (name, config) in &self.configs {
            let records = records_in(&stored, name);
            let (plan, gate) = match self.gated_plan(config, &records, now, false).await {
                Ok(planned) => planned,
                Err(e) => {
                    failures.push((name.clone(), e));
                    continue;
                }
            };
            let mut actor = Actor::scheduler();
            if let GateStatus::DeadlinePassed { unseen, .. } = &gate {
                if rotation::promotion(&plan.steps).is_some() {
                    let unseen: Vec<&str> = unseen.iter().map(|u| u.fetcher.as_str()).collect();
                    warn!(
                        keyset = %name,
                        unseen_by = %unseen.join("; "),
                        "rotation_deadline passed without every recent fetcher having been served the next key; rotating anyway"
                    );
                    actor.detail = Some(
                        serde_json::json!({ "rotation_deadline_passed": true, "unseen_by": unseen })
                            .to_string(),
                    );
                }
            }
            if let GateStatus::Waiting {
                unseen, deadline, ..
            } = &gate
            {
                tracing::debug!(keyset = %name, waiting_for = unseen.len(), deadline, "the scheduled rotation waits for fetch evidence");
            }
            if !plan.steps.is_empty() {
                match self.apply(config, &stored, &plan.steps, now, &actor).await {
                    Ok(applied) => {
                        let steps: Vec<String> =
                            plan.steps.iter().map(ToString::to_string).collect();
                        info!(keyset = %name, steps = %steps.join(", "), created = %applied.created.join(", "), "applied the key schedule");
                        stored = applied.keys;
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

    /// The plan of one key set under its fetch gate (see [`rotation::plan_gated`]). The
    /// fetcher record is read only when the gate is on and the rotation is due (or when
    /// `always`, for an outlook).
    async fn gated_plan(
        &self,
        config: &KeysetConfig,
        records: &[KeyRecord],
        now: UnixTime,
        always: bool,
    ) -> Result<(Plan, GateStatus), Error> {
        let gate = &config.fetch_gate;
        let sightings = match rotation::rotation_due(records, &config.timing) {
            Some((due, next)) if gate.requires_fetch && (always || due <= now) => {
                let fetchers = self.store.fetchers(&config.name).await?;
                crate::fetchers::sightings(&fetchers, &next.kid)
            }
            _ => Vec::new(),
        };
        Ok(rotation::plan_gated(
            records,
            now,
            &config.timing,
            gate,
            &sightings,
        ))
    }

    /// When `keyset` next changes by itself and where its fetch gate stands, from the keys
    /// served now and the fetcher record.
    pub async fn schedule(&self, keyset: &str, now: UnixTime) -> Result<KeysetSchedule, Error> {
        let config = self
            .configs
            .get(keyset)
            .ok_or_else(|| Error::UnknownKeyset(keyset.to_owned()))?;
        let snapshot = self.snapshot();
        let records = snapshot
            .keysets
            .get(keyset)
            .map(|view| view.records.clone())
            .unwrap_or_default();
        // Without the gate nothing here needs the store: listing keys keeps working while
        // the store is unavailable, as it did before there was a schedule to show.
        let gate = if config.fetch_gate.requires_fetch {
            let now = self.lifecycle_now(now).await?;
            self.gated_plan(config, &records, now, true).await?.1
        } else {
            GateStatus::Off
        };
        Ok(KeysetSchedule {
            next_rotation_at: rotation::rotation_due(&records, &config.timing).map(|(at, _)| at),
            next_removal_at: rotation::next_removal(&records),
            gate,
        })
    }

    /// Promotes the published successor of `keyset`; see [`rotation::check_rotation`] and,
    /// for the fetch evidence, [`rotation::check_rotation_evidence`].
    pub async fn rotate(
        &self,
        keyset: &str,
        force: bool,
        now: UnixTime,
    ) -> Result<RotationOutcome, Error> {
        self.rotate_via(keyset, force, now, Via::AdminApi).await
    }

    /// [`Keyring::rotate`], with the audit trail naming the door it came through.
    pub async fn rotate_via(
        &self,
        keyset: &str,
        force: bool,
        now: UnixTime,
        via: Via,
    ) -> Result<RotationOutcome, Error> {
        let config = self
            .configs
            .get(keyset)
            .ok_or_else(|| Error::UnknownKeyset(keyset.to_owned()))?;
        let _writer = self.writer.lock().await;
        let now = self.lifecycle_now(now).await?;
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
            RotationRefused::NotFetched { .. } => unreachable!("check_rotation reads no fetchers"),
        })?;
        let Some((promoted, retired)) = rotation::promotion(&steps) else {
            unreachable!("check_rotation always promotes")
        };
        let (promoted, retired) = (promoted.to_owned(), retired.map(str::to_owned));
        // Read under the writer lock, with the keys the decision is made from.
        let fetchers = self.store.fetchers(keyset).await?;
        let sightings = crate::fetchers::sightings(&fetchers, &promoted);
        let unseen = rotation::check_rotation_evidence(
            &sightings,
            now,
            &config.timing,
            &config.fetch_gate,
            force,
        )
        .map_err(|r| match r {
            RotationRefused::NotFetched {
                unseen,
                retry_after,
            } => Error::NextKeyNotFetched {
                keyset: keyset.to_owned(),
                next_kid: promoted.clone(),
                unseen: unseen.into_iter().map(|u| u.fetcher).collect(),
                jwks_max_age: config.timing.jwks_max_age,
                retry_after,
            },
            other => unreachable!("check_rotation_evidence refuses only for fetchers: {other:?}"),
        })?;
        let unseen_by: Vec<String> = unseen.into_iter().map(|u| u.fetcher).collect();
        let forced = rotation::forced(&records, &steps, now, &config.timing);
        let gate_forced = force && config.fetch_gate.requires_fetch && !unseen_by.is_empty();
        let actor = Actor::admin(
            serde_json::json!({
                "forced": forced.is_some() || gate_forced,
                "unseen_by": unseen_by,
            }),
            via,
        );
        let created = self
            .apply(config, &stored, &steps, now, &actor)
            .await?
            .created;
        if let Some(Forced::Early { published_for }) = forced {
            warn!(keyset, kid = %promoted, published_for = %HumanSeconds(published_for), "forced rotation before prepublish elapsed");
        }
        if !unseen_by.is_empty() {
            warn!(keyset, kid = %promoted, unseen_by = %unseen_by.join("; "), "rotated before every recent fetcher had been served the new signing key");
        }
        info!(keyset, promoted = %promoted, retired = retired.as_deref().unwrap_or("none"), new_next = %created.join(", "), "rotated");
        let mut warnings: Vec<String> = forced
            .map(|f| f.warning(&promoted, &config.timing))
            .into_iter()
            .collect();
        if !unseen_by.is_empty() {
            warnings.push(format!(
                "these recent fetchers had not been served {promoted} at least {} before: {}; \
                 their token requests may fail until they fetch the JWKS again (up to {})",
                HumanSeconds(config.timing.jwks_max_age),
                unseen_by.join("; "),
                HumanSeconds(config.timing.jwks_max_age)
            ));
        }
        Ok(RotationOutcome {
            keyset: keyset.to_owned(),
            warning: (!warnings.is_empty()).then(|| warnings.join(". ")),
            promoted,
            retired,
            new_next: created.into_iter().next(),
            forced: forced.is_some() || gate_forced,
            unseen_by,
        })
    }

    /// Revokes `kid`: it leaves the JWKS at once and never signs again.
    pub async fn revoke(
        &self,
        kid: &str,
        reason: Option<&str>,
        now: UnixTime,
    ) -> Result<RevocationOutcome, Error> {
        self.revoke_via(kid, reason, now, Via::AdminApi).await
    }

    /// [`Keyring::revoke`], with the audit trail naming the door it came through.
    pub async fn revoke_via(
        &self,
        kid: &str,
        reason: Option<&str>,
        now: UnixTime,
        via: Via,
    ) -> Result<RevocationOutcome, Error> {
        let _writer = self.writer.lock().await;
        let now = self.lifecycle_now(now).await?;
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
        let promoted = rotation::promotion(&steps).map(|(next, _)| next.to_owned());
        let forced = rotation::forced(&records, &steps, now, &config.timing);
        let actor = Actor::admin(
            serde_json::json!({ "forced": forced.is_some(), "reason": reason }),
            via,
        );
        let created = self
            .apply(config, &stored, &steps, now, &actor)
            .await?
            .created;
        // A freshly made current key (no successor existed) is in `created` first.
        let (promoted, new_next) = if steps.contains(&Step::CreateCurrent) {
            (created.first().cloned(), created.get(1).cloned())
        } else {
            (promoted, created.first().cloned())
        };
        let warning = forced
            .zip(promoted.as_deref())
            .map(|(forced, kid)| forced.warning(kid, &config.timing));
        warn!(keyset = %keyset, kid, promoted = promoted.as_deref().unwrap_or("none"), "revoked");
        Ok(RevocationOutcome {
            keyset,
            revoked: kid.to_owned(),
            promoted,
            new_next,
            warning,
        })
    }

    /// Applies `steps` through [`apply::apply`], then swaps in the snapshot of exactly what
    /// was committed. Called under the writer lock.
    async fn apply(
        &self,
        config: &KeysetConfig,
        stored: &[StoredKey],
        steps: &[Step],
        now: UnixTime,
        actor: &Actor,
    ) -> Result<apply::Applied, Error> {
        let applied = apply::apply(
            self.store.as_ref(),
            &self.master,
            config,
            stored,
            steps,
            now,
            actor,
        )
        .await?;
        self.rebuild(&applied.keys, now)?;
        Ok(applied)
    }

    /// Verifies `stored` and swaps in a new snapshot built from it.
    fn rebuild(&self, stored: &[StoredKey], now: UnixTime) -> Result<(), Error> {
        let snapshot = Arc::new(Snapshot::build(&self.configs, stored, &self.master, now)?);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::apply::tests::keyset;
    use crate::store::postgres::PgStore;

    /// Two jwksd on one PostgreSQL database, the second's clock two days fast: it makes the
    /// first one's decisions (no scheduled rotation, an unforced rotation too early),
    /// because both follow the database's clock. PostgreSQL only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_with_skewed_clocks_decide_by_the_database_clock() {
        let Some(url) = crate::store::test_database().await else {
            eprintln!("PostgreSQL only: JWKSD_TEST_POSTGRES is not set");
            return;
        };
        let master = Arc::new(MasterKey::generate().0);
        // Rotates daily: a clock two days fast would find the current key overdue.
        let configs = BTreeMap::from([("default".to_owned(), keyset("default"))]);
        let first = PgStore::connect(&url).await.unwrap();
        let first = first.finish(Some(master.clone())).await.unwrap();
        first.commit_first_start().await.unwrap();
        let now = crate::unix_now();
        let a = Keyring::open(
            Arc::new(first),
            master.clone(),
            configs.clone(),
            true,
            false,
            now,
        )
        .await
        .unwrap();
        let second = PgStore::connect(&url).await.unwrap();
        let second = second.finish(Some(master.clone())).await.unwrap();
        let skew = 2 * 86_400;
        let fast: crate::Clock = Arc::new(move || crate::unix_now() + skew);
        let b = Keyring::open(Arc::new(second), master, configs, false, false, now)
            .await
            .unwrap()
            .with_local_clock(fast.clone());
        let current = |k: &Keyring| {
            k.snapshot().keysets["default"]
                .signer
                .as_ref()
                .unwrap()
                .kid
                .clone()
        };
        let before = current(&a);
        assert_eq!(current(&b), before);

        // B's scheduler: nothing is due by the database's clock; the next change it reports
        // is on B's own clock, a day after the first keys were made.
        let next = b.tick(fast()).await.unwrap().unwrap();
        assert_eq!(current(&b), before, "no rotation on the fast replica");
        assert!(
            (next - (now + 86_400 + skew)).abs() <= 3,
            "{next} vs {}",
            now + 86_400 + skew
        );
        // An operator's unforced rotation on B is too early, as it is on A.
        for (name, keyring, at) in [("A", &a, crate::unix_now()), ("B", &b, fast())] {
            match keyring.rotate("default", false, at).await {
                Err(Error::RotationTooEarly { retry_after, .. }) => {
                    assert!(
                        (4497..=4500).contains(&retry_after),
                        "{name}: {retry_after}"
                    )
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        a.reload(crate::unix_now()).await.unwrap();
        assert_eq!(current(&a), before);

        // A `now` that is not the local clock's (a test's invented time) keeps its
        // difference: two days ahead on A, the rotation is due.
        a.tick(crate::unix_now() + skew).await.unwrap();
        assert_ne!(current(&a), before, "the invented time rotated");
    }
}
