//! Applying lifecycle decisions: turning the steps [`crate::rotation`] decided into one
//! store [`Change`] with the audit records that describe it, generating (and sealing) the
//! keys a change creates, and unsealing stored private halves.
//!
//! Sealing and unsealing live together because they must agree on the associated data that
//! binds a private half to its row (kid, key set, algorithm). Nothing here holds a lock or a
//! snapshot: the keyring serialises calls and builds the snapshot of what was committed.

use std::sync::Arc;

use crate::audit::{event, AuditEvent};
use crate::config::KeysetConfig;
use crate::error::Error;
use crate::keys::cert;
use crate::keys::seal::private_key_aad;
use crate::keys::{KeyMaterial, MasterKey, PublicJwk};
use crate::rotation::{KeyRecord, KeyState, Step, UnixTime};
use crate::store::{Change, Store, StoredKey, Transition};

/// Who asked for a lifecycle change, for the audit trail.
#[derive(Clone, Debug)]
pub(super) struct Actor {
    pub name: &'static str,
    /// Facts about the request (forced, reason), as JSON text.
    pub detail: Option<String>,
}

impl Actor {
    pub fn scheduler() -> Self {
        Actor {
            name: "scheduler",
            detail: None,
        }
    }

    /// The admin, through `via`; `detail` is a JSON object.
    pub fn admin(mut detail: serde_json::Value, via: super::Via) -> Self {
        if let Some(facts) = detail.as_object_mut() {
            facts.insert("via".to_owned(), via.as_str().into());
        }
        Actor {
            name: "admin",
            detail: Some(detail.to_string()),
        }
    }
}

/// What applying a change did.
#[derive(Debug)]
pub(super) struct Applied {
    /// The kids of the keys it created, in the order of the steps that made them.
    pub created: Vec<String>,
    /// Every stored key as the committed change leaves it.
    pub keys: Vec<StoredKey>,
}

/// The records of one key set, oldest first.
pub(super) fn records_in(stored: &[StoredKey], keyset: &str) -> Vec<KeyRecord> {
    stored
        .iter()
        .filter(|k| k.record.keyset == keyset)
        .map(|k| k.record.clone())
        .collect()
}

/// Turns `steps` into one change with its audit records and applies it in one store
/// transaction to `stored` (what the store held when the steps were planned). Returns the
/// keys as the commit leaves them, computed from `stored` and the change rather than read
/// back: once the commit returns, nothing can leave memory and disk disagreeing.
pub(super) async fn apply(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    config: &KeysetConfig,
    stored: &[StoredKey],
    steps: &[Step],
    now: UnixTime,
    actor: &Actor,
) -> Result<Applied, Error> {
    let change = change_for(master, config, stored, steps, now, actor).await?;
    store.apply(&change).await?;
    let created = change
        .inserts
        .iter()
        .map(|k| k.record.kid.clone())
        .collect();
    let mut keys = stored.to_vec();
    for transition in &change.transitions {
        if let Some(key) = keys.iter_mut().find(|k| k.record.kid == transition.kid) {
            transition.apply_to(key);
        }
    }
    keys.extend(change.inserts);
    Ok(Applied { created, keys })
}

/// The change that carries out `steps` on the key set `config`, whose keys (with the
/// others) are `stored`: generated keys, transitions that each name the state they expect,
/// and one audit record per step.
async fn change_for(
    master: &Arc<MasterKey>,
    config: &KeysetConfig,
    stored: &[StoredKey],
    steps: &[Step],
    now: UnixTime,
    actor: &Actor,
) -> Result<Change, Error> {
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
    for step in steps {
        match step {
            Step::CreateCurrent | Step::CreateNext => {
                let state = if step == &Step::CreateCurrent {
                    KeyState::Current
                } else {
                    KeyState::Next
                };
                let key = generate(master, config, state, now).await?;
                let detail =
                    serde_json::json!({ "state": state.as_str(), "alg": config.alg.as_str() });
                change.events.push(event(
                    event::KEY_GENERATED,
                    &key.record.kid,
                    Some(detail.to_string()),
                ));
                change.inserts.push(key);
            }
            Step::Promote { next, retire } => {
                change
                    .events
                    .push(event(event::KEY_PROMOTED, next, actor.detail.clone()));
                if let Some(old) = retire {
                    change.events.push(event(event::KEY_RETIRED, old, None));
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
            }
            Step::Remove { kid } => {
                change.events.push(event(event::KEY_REMOVED, kid, None));
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
                    .push(event(event::KEY_REVOKED, kid, actor.detail.clone()));
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
    Ok(change)
}

/// Generates, certifies and seals a key on a blocking thread (RSA generation takes long
/// enough to stall the runtime).
async fn generate(
    master: &Arc<MasterKey>,
    config: &KeysetConfig,
    state: KeyState,
    now: UnixTime,
) -> Result<StoredKey, Error> {
    let config = config.clone();
    let master = master.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        new_key(&master, &config, state, now)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// A fresh key of `config`'s algorithm in `state`, its certificate, and its private half
/// sealed under `master` to its kid, key set and algorithm.
fn new_key(
    master: &MasterKey,
    config: &KeysetConfig,
    state: KeyState,
    now: UnixTime,
) -> Result<StoredKey, Error> {
    let key = KeyMaterial::generate(config.alg, config.rsa_bits)?;
    let public = key.public_jwk();
    let kid = public.thumbprint();
    let issued =
        time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let cert_der = cert::self_signed(&key, &config.cert_subject, issued)?;
    let pkcs8 = key.to_pkcs8()?;
    let aad = private_key_aad(&kid, &config.name, config.alg.as_str());
    let sealed = master.seal(&pkcs8, &aad);
    Ok(StoredKey {
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
}

/// Opens the sealed private half of `key` and checks that it is the private half of
/// `public` (which the caller has checked hashes to the kid).
pub(super) fn unseal(
    master: &MasterKey,
    key: &StoredKey,
    sealed: &[u8],
    public: &PublicJwk,
) -> Result<KeyMaterial, Error> {
    let r = &key.record;
    let aad = private_key_aad(&r.kid, &r.keyset, r.alg.as_str());
    let pkcs8 = master.open(sealed, &aad).map_err(|_| {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::audit::{AuditFilter, AuditRecord};
    use crate::keys::{Algorithm, RsaBits};
    use crate::rotation::{self, Timing};
    use crate::store::StoreError;

    /// An EC key set with the default timing of a day-long rotation.
    pub(in crate::keyring) fn keyset(name: &str) -> KeysetConfig {
        KeysetConfig {
            name: name.to_owned(),
            alg: Algorithm::Es256,
            rsa_bits: RsaBits::B2048,
            timing: Timing {
                rotation_period: Some(86_400),
                jwks_max_age: 3600,
                prepublish: 4500,
                retire_grace: 86_400,
            },
            cert_subject: "CN=jwksd test".to_owned(),
            fetch_gate: rotation::FetchGate::default(),
        }
    }

    /// A key as the store would hold it in `state`, created at `created`: retired, removed
    /// and revoked keys without their private half, as the store erases it.
    pub(in crate::keyring) fn stored_key(
        config: &KeysetConfig,
        master: &MasterKey,
        state: KeyState,
        created: UnixTime,
    ) -> StoredKey {
        let mut key = new_key(master, config, KeyState::Next, created).unwrap();
        Transition {
            kid: key.record.kid.clone(),
            from: KeyState::Next,
            to: state,
            at: created + 1,
            remove_at: (state == KeyState::Retired).then_some(created + 1 + 86_400),
        }
        .apply_to(&mut key);
        key
    }

    /// A sealed, empty store in a temporary directory, as a first start leaves it.
    /// On PostgreSQL when `JWKSD_TEST_POSTGRES` is set (see `store::test_store`).
    async fn empty_store() -> (tempfile::TempDir, Arc<dyn Store>, Arc<MasterKey>) {
        let dir = tempfile::tempdir().unwrap();
        let master = Arc::new(MasterKey::generate().0);
        let store = crate::store::test_store(dir.path(), master.clone()).await;
        super::super::integrity::check_master_key(store.as_ref(), &master, true, false)
            .await
            .unwrap();
        (dir, store, master)
    }

    /// An empty store whose key set `default` has had its first plan applied by the
    /// scheduler at time 1000: a current and a next key, committed and audited.
    async fn first_plan_applied() -> (
        tempfile::TempDir,
        Arc<dyn Store>,
        Arc<MasterKey>,
        KeysetConfig,
        Applied,
    ) {
        let (dir, store, master) = empty_store().await;
        let config = keyset("default");
        let plan = rotation::plan(&[], 1000, &config.timing);
        let applied = apply(
            &*store,
            &master,
            &config,
            &[],
            &plan.steps,
            1000,
            &Actor::scheduler(),
        )
        .await
        .unwrap();
        (dir, store, master, config, applied)
    }

    async fn trail(store: &dyn Store) -> Vec<AuditRecord> {
        store
            .audit_page(&AuditFilter::default(), 0, 100)
            .await
            .unwrap()
    }

    fn records(keys: &[StoredKey]) -> Vec<KeyRecord> {
        keys.iter().map(|k| k.record.clone()).collect()
    }

    /// The records by kid: the store loads keys in creation order, which leaves keys made
    /// in the same second in either order.
    fn sorted_records(keys: &[StoredKey]) -> Vec<KeyRecord> {
        let mut records = records(keys);
        records.sort_by(|a, b| a.kid.cmp(&b.kid));
        records
    }

    #[tokio::test]
    async fn a_first_plan_creates_a_current_and_a_next_key_and_records_both() {
        let (_dir, store, _master, _config, applied) = first_plan_applied().await;
        let states: Vec<KeyState> = applied.keys.iter().map(|k| k.record.state).collect();
        assert_eq!(states, [KeyState::Current, KeyState::Next]);
        assert_eq!(applied.created, records_kids(&applied.keys));
        assert!(applied.keys.iter().all(|k| k.sealed_private.is_some()
            && k.record.alg == Algorithm::Es256
            && k.record.created_at == 1000));
        // What the keyring keeps is exactly what was committed.
        assert_eq!(
            sorted_records(&store.load_keys().await.unwrap()),
            sorted_records(&applied.keys)
        );
        let trail = trail(&*store).await;
        assert_eq!(trail.len(), 2);
        for (record, kid) in trail.iter().zip(&applied.created) {
            assert_eq!(record.event.event, event::KEY_GENERATED);
            assert_eq!(record.event.kid.as_ref(), Some(kid));
            assert_eq!(record.event.caller.as_deref(), Some("scheduler"));
            assert_eq!(record.event.keyset.as_deref(), Some("default"));
        }
        assert_eq!(
            trail[0].event.detail.as_deref(),
            Some(r#"{"alg":"ES256","state":"current"}"#)
        );
    }

    fn records_kids(keys: &[StoredKey]) -> Vec<String> {
        keys.iter().map(|k| k.record.kid.clone()).collect()
    }

    #[tokio::test]
    async fn a_rotation_retires_the_old_key_erases_its_private_half_and_audits_each_step() {
        let (_dir, store, master, config, start) = first_plan_applied().await;
        let (old, next) = (start.created[0].clone(), start.created[1].clone());
        let now = 1000 + 86_400;
        let plan = rotation::plan(&records(&start.keys), now, &config.timing);
        let actor = Actor::admin(
            serde_json::json!({ "forced": false }),
            crate::keyring::Via::AdminApi,
        );
        let rotated = apply(
            &*store,
            &master,
            &config,
            &start.keys,
            &plan.steps,
            now,
            &actor,
        )
        .await
        .unwrap();
        assert_eq!(rotated.created.len(), 1);
        let by_kid = |kid: &str| {
            rotated
                .keys
                .iter()
                .find(|k| k.record.kid == kid)
                .unwrap()
                .clone()
        };
        let retired = by_kid(&old);
        assert_eq!(retired.record.state, KeyState::Retired);
        assert_eq!(retired.record.retired_at, Some(now));
        assert_eq!(
            retired.record.remove_at,
            Some(now + config.timing.retire_grace)
        );
        assert!(retired.sealed_private.is_none());
        let promoted = by_kid(&next);
        assert_eq!(promoted.record.state, KeyState::Current);
        assert_eq!(promoted.record.activated_at, Some(now));
        assert_eq!(by_kid(&rotated.created[0]).record.state, KeyState::Next);
        assert_eq!(
            sorted_records(&store.load_keys().await.unwrap()),
            sorted_records(&rotated.keys)
        );
        let events: Vec<(String, Option<String>, Option<String>)> = trail(&*store).await[2..]
            .iter()
            .map(|r| {
                (
                    r.event.event.clone(),
                    r.event.kid.clone(),
                    r.event.detail.clone(),
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                (
                    event::KEY_PROMOTED.to_owned(),
                    Some(next),
                    Some(r#"{"forced":false,"via":"admin_api"}"#.to_owned())
                ),
                (event::KEY_RETIRED.to_owned(), Some(old), None),
                (
                    event::KEY_GENERATED.to_owned(),
                    Some(rotated.created[0].clone()),
                    Some(r#"{"alg":"ES256","state":"next"}"#.to_owned())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn steps_planned_from_a_stale_view_write_nothing() {
        let (_dir, store, master, config, start) = first_plan_applied().await;
        let current = start.created[0].clone();
        let revoke = [Step::Revoke {
            kid: current.clone(),
        }];
        let actor = Actor::admin(
            serde_json::json!({ "reason": "test" }),
            crate::keyring::Via::AdminApi,
        );
        apply(
            &*store,
            &master,
            &config,
            &start.keys,
            &revoke,
            2000,
            &actor,
        )
        .await
        .unwrap();
        let before = trail(&*store).await.len();
        // The same revocation again, planned from the keys as they were before the first.
        let err = apply(
            &*store,
            &master,
            &config,
            &start.keys,
            &revoke,
            3000,
            &actor,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, Error::Store(StoreError::Conflict(_))),
            "{err:?}"
        );
        assert_eq!(trail(&*store).await.len(), before, "no audit record either");
        let stored = store.load_keys().await.unwrap();
        let revoked = stored.iter().find(|k| k.record.kid == current).unwrap();
        assert_eq!(revoked.record.revoked_at, Some(2000));
    }

    #[tokio::test]
    async fn revoking_a_kid_the_key_set_does_not_hold_is_refused_before_any_write() {
        let (_dir, store, master) = empty_store().await;
        let steps = [Step::Revoke {
            kid: "no-such-kid".into(),
        }];
        let err = apply(
            &*store,
            &master,
            &keyset("default"),
            &[],
            &steps,
            1000,
            &Actor::admin(serde_json::json!({}), crate::keyring::Via::AdminApi),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::UnknownKid(ref kid) if kid == "no-such-kid"));
        assert!(trail(&*store).await.is_empty());
    }

    #[test]
    fn a_private_half_opens_only_for_its_own_row() {
        let (master, _) = MasterKey::generate();
        let config = keyset("default");
        let key = new_key(&master, &config, KeyState::Next, 10).unwrap();
        let public = PublicJwk::from_stored_json(&key.public_jwk).unwrap();
        let sealed = key.sealed_private.clone().unwrap();
        assert!(unseal(&master, &key, &sealed, &public).is_ok());
        // The same sealed half presented as another key set's is refused: the AAD binds it.
        let mut moved = key.clone();
        moved.record.keyset = "other".into();
        let err = unseal(&master, &moved, &sealed, &public).unwrap_err();
        assert!(err.to_string().contains("does not decrypt"), "{err}");
        // A half that opens but belongs to another public key is refused too.
        let other = new_key(&master, &config, KeyState::Next, 10).unwrap();
        let other_public = PublicJwk::from_stored_json(&other.public_jwk).unwrap();
        let err = unseal(&master, &key, &sealed, &other_public).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
