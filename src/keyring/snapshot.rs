//! The published snapshot: what readers see of every key set at one instant (its records,
//! its JWKS bytes and ETag, its signer, the certificates of its published keys).
//!
//! A [`Snapshot`] is built whole from the stored keys, verifying each row as it goes, and is
//! never changed afterwards; the keyring swaps in a new one after every change. The JWKS of
//! each key set is rendered here once per change, so serving it copies bytes and nothing
//! else, and its ETag is a hash of exactly those bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::apply::unseal;
use super::integrity;
use crate::config::KeysetConfig;
use crate::error::Error;
use crate::keys::cert;
use crate::keys::jwk::{Jwk, JwkSet};
use crate::keys::{MasterKey, PublicJwk, Signer};
use crate::rotation::{self, KeyRecord, KeyState, UnixTime};
use crate::store::StoredKey;

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
    /// The kids `body` lists, in its order: what a fetcher served this document holds (the
    /// fetcher record notes them without parsing the body).
    pub kids: Arc<[String]>,
}

impl PublishedJwks {
    /// The `max-age` to send at `now`.
    pub fn max_age(&self, now: UnixTime) -> i64 {
        rotation::jwks_max_age(now, self.next_change_at, self.max_age_ceiling)
    }
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

    /// The snapshot of `stored` at `now`, one view per configured key set. Every row is
    /// verified as it is read ([`integrity`]'s per-row checks, and the private half of each
    /// key that signs or will sign must open and match its public half): a snapshot that
    /// exists holds nothing the store could not prove.
    pub(super) fn build(
        configs: &BTreeMap<String, KeysetConfig>,
        stored: &[StoredKey],
        master: &MasterKey,
        now: UnixTime,
    ) -> Result<Self, Error> {
        let mut by_keyset: BTreeMap<&str, Vec<&StoredKey>> = BTreeMap::new();
        for key in stored {
            by_keyset.entry(&key.record.keyset).or_default().push(key);
        }
        let mut snapshot = Snapshot::default();
        for (name, config) in configs {
            let keys = by_keyset.remove(name.as_str()).unwrap_or_default();
            integrity::check_keyset_states(name, &keys)?;
            let mut published = Vec::new();
            let mut signer = None;
            for key in &keys {
                let public = integrity::verify_public(key)?;
                integrity::check_private_half(key)?;
                if let Some(sealed) = &key.sealed_private {
                    // Unsealed for a next key too, so a successor that would fail to sign is
                    // found now rather than when it is promoted.
                    let material = unseal(master, key, sealed, &public)?;
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
            // One total order on every replica: the store's (creation time, then kid), even
            // for keys this process has just made, which arrive in the order it made them.
            let mut records: Vec<KeyRecord> = keys.iter().map(|k| k.record.clone()).collect();
            records.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
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
        Ok(snapshot)
    }
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
        kids: published.iter().map(|(r, _)| r.kid.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::apply::tests::{keyset, stored_key};

    /// The kids of a JWKS body, in the order it lists them.
    fn kids(jwks: &PublishedJwks) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_slice(&jwks.body).unwrap();
        value["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A key set in every state: two retired keys (the second newer), a current, a next, a
    /// removed and a revoked key.
    fn every_state(master: &MasterKey) -> Vec<StoredKey> {
        let config = keyset("default");
        [
            (KeyState::Retired, 100),
            (KeyState::Retired, 200),
            (KeyState::Current, 300),
            (KeyState::Next, 400),
            (KeyState::Removed, 50),
            (KeyState::Revoked, 250),
        ]
        .into_iter()
        .map(|(state, created)| stored_key(&config, master, state, created))
        .collect()
    }

    fn configs() -> BTreeMap<String, KeysetConfig> {
        BTreeMap::from([("default".to_owned(), keyset("default"))])
    }

    #[test]
    fn the_jwks_lists_current_then_next_then_retired_newest_first_and_nothing_else() {
        let (master, _) = MasterKey::generate();
        let keys = every_state(&master);
        let snapshot = Snapshot::build(&configs(), &keys, &master, 1000).unwrap();
        let view = &snapshot.keysets["default"];
        let kid = |i: usize| keys[i].record.kid.clone();
        assert_eq!(kids(&view.jwks), vec![kid(2), kid(3), kid(1), kid(0)]);
        assert_eq!(view.records.len(), 6, "the view keeps every record");
        assert_eq!(
            view.signer.as_ref().map(|s| s.kid.clone()),
            Some(kid(2)),
            "the current key signs"
        );
    }

    #[test]
    fn the_etag_depends_on_the_published_keys_only_never_on_row_order() {
        let (master, _) = MasterKey::generate();
        let keys = every_state(&master);
        let first = Snapshot::build(&configs(), &keys, &master, 1000).unwrap();
        let mut reversed = keys.clone();
        reversed.reverse();
        let again = Snapshot::build(&configs(), &reversed, &master, 2000).unwrap();
        let (a, b) = (
            &first.keysets["default"].jwks,
            &again.keysets["default"].jwks,
        );
        assert_eq!(a.body, b.body);
        assert_eq!(a.etag, b.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"') && a.etag.len() == 26);

        // Removing a retired key changes the bytes, so it changes the ETag.
        let fewer: Vec<StoredKey> = keys
            .iter()
            .filter(|k| k.record.kid != keys[0].record.kid)
            .cloned()
            .collect();
        let after = Snapshot::build(&configs(), &fewer, &master, 1000).unwrap();
        assert_ne!(after.keysets["default"].jwks.etag, a.etag);
    }

    /// Replicas list one key set in one order, whichever order the rows came in: a replica
    /// that made two keys in one second holds them in the order it made them, one that
    /// re-read them in the order the store returned them.
    #[test]
    fn records_are_listed_by_creation_time_then_kid_whatever_the_order_given() {
        let (master, _) = MasterKey::generate();
        let config = keyset("default");
        let mut keys: Vec<StoredKey> = [KeyState::Retired, KeyState::Current, KeyState::Next]
            .into_iter()
            .map(|state| stored_key(&config, &master, state, 500))
            .collect();
        keys.push(stored_key(&config, &master, KeyState::Retired, 100));
        let listed = |keys: &[StoredKey]| -> Vec<(i64, String)> {
            let snapshot = Snapshot::build(&configs(), keys, &master, 1000).unwrap();
            snapshot.keysets["default"]
                .records
                .iter()
                .map(|r| (r.created_at, r.kid.clone()))
                .collect()
        };
        let mut expected: Vec<(i64, String)> = keys
            .iter()
            .map(|k| (k.record.created_at, k.record.kid.clone()))
            .collect();
        expected.sort();
        assert_eq!(listed(&keys), expected);
        keys.reverse();
        assert_eq!(listed(&keys), expected);
    }

    #[test]
    fn certificates_are_served_for_published_keys_only() {
        let (master, _) = MasterKey::generate();
        let keys = every_state(&master);
        let snapshot = Snapshot::build(&configs(), &keys, &master, 1000).unwrap();
        for key in &keys {
            let pem = snapshot.cert_pem(&key.record.kid);
            assert_eq!(
                pem.is_some(),
                key.record.state.is_published(),
                "certificate of a {} key",
                key.record.state
            );
            if let Some(pem) = pem {
                assert_eq!(&*pem, cert::to_pem(&key.cert_der));
            }
            // Every record is found, published or not.
            assert_eq!(snapshot.find_key(&key.record.kid), Some(&key.record));
        }
        assert!(snapshot.cert_pem("no-such-kid").is_none());
        assert!(snapshot.find_key("no-such-kid").is_none());
    }

    #[test]
    fn a_configured_key_set_without_keys_is_served_empty_and_cannot_sign() {
        let (master, _) = MasterKey::generate();
        let snapshot = Snapshot::build(&configs(), &[], &master, 1000).unwrap();
        let view = &snapshot.keysets["default"];
        assert_eq!(&view.jwks.body[..], br#"{"keys":[]}"#);
        assert!(view.signer.is_none());
    }

    #[test]
    fn keys_of_unconfigured_key_sets_are_not_served() {
        let (master, _) = MasterKey::generate();
        let other = stored_key(&keyset("other"), &master, KeyState::Current, 10);
        let snapshot =
            Snapshot::build(&configs(), std::slice::from_ref(&other), &master, 1000).unwrap();
        assert!(!snapshot.keysets.contains_key("other"));
        assert!(snapshot.cert_pem(&other.record.kid).is_none());
    }

    #[test]
    fn a_row_that_fails_a_check_builds_no_snapshot() {
        let (master, _) = MasterKey::generate();
        let config = keyset("default");
        // A current key whose private half is gone.
        let mut current = stored_key(&config, &master, KeyState::Current, 10);
        current.sealed_private = None;
        let err = Snapshot::build(&configs(), &[current], &master, 1000).unwrap_err();
        assert!(err.to_string().contains("private half is missing"), "{err}");
        // A private half sealed under another master key.
        let (other_master, _) = MasterKey::generate();
        let foreign = stored_key(&config, &other_master, KeyState::Next, 10);
        let err = Snapshot::build(&configs(), &[foreign], &master, 1000).unwrap_err();
        assert!(err.to_string().contains("does not decrypt"), "{err}");
    }
}
