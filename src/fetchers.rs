//! The fetcher record: who fetches each key set's JWKS (user agent and source network), when
//! first and last, and which kids each was served. It is how an operator, and the fetch gate
//! of a rotation ([`crate::rotation::plan_gated`]), know whether the EHR has seen the next
//! key.
//!
//! The JWKS handler only calls [`FetcherLog::record`]: a hash-map update under a mutex that
//! is never held across I/O, so serving the JWKS never waits for the store. A background
//! task calls [`FetcherLog::flush`] every [`FLUSH_INTERVAL`] (and once at shutdown), which
//! writes the accumulated fetches in one store transaction; a failed flush keeps them for
//! the next. Reads ([`FetcherLog::fetchers`], [`FetcherLog::kid_served`]) come from the
//! store, so with several replicas on one database each reports every replica's fetchers.
//!
//! Bounded by design: a fetcher is (user agent, IPv4 /24 or IPv6 /48), user agents are cut
//! to [`MAX_USER_AGENT`] characters, at most [`PENDING_CAP`] distinct fetchers wait in
//! memory, and a key set keeps at most [`FETCHERS_PER_KEYSET`] in the store. At that cap a
//! *new* fetcher is not recorded (counted and logged) until old ones age out
//! ([`RETENTION`] after their last fetch): a flood of invented user agents can never push
//! out the EHRs already on record, which is the evidence rotation relies on.
//!
//! The source address is the TCP peer, or, when the peer is one of
//! `server.trusted_proxies`, what that proxy put in `X-Forwarded-For` ([`source_address`]).
//!
//! Layer: above [`crate::store`] and [`crate::config`], below the keyring (which reads the
//! record inside a rotation) and the HTTP handlers (which record and list).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::IpNetwork;
use crate::rotation::UnixTime;
use crate::store::{Fetcher, ServedKid, Store, StoreError};

/// How often the accumulated fetches are written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Most distinct fetchers one key set keeps in the store.
pub const FETCHERS_PER_KEYSET: usize = 1000;
/// Most distinct fetchers waiting in memory for the next flush; beyond it, fetches of new
/// fetchers are dropped (and counted) until the flush.
pub const PENDING_CAP: usize = 10_000;
/// A fetcher not seen for this long leaves the record.
pub const RETENTION: i64 = 90 * 86_400;
/// Longest user agent kept, in characters.
pub const MAX_USER_AGENT: usize = 200;

/// The source network of `ip`, as the record keys fetchers: the IPv4 /24 or the IPv6 /48
/// (an IPv4-mapped IPv6 address counts as IPv4). Coarse on purpose: one EHR's verifiers
/// share a network, and the number of networks one party can fetch from is small.
pub fn network_of(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{net}/48")
        }
    }
}

/// The address a request came from: `peer` (the TCP peer), unless `peer` is a trusted
/// proxy; then `X-Forwarded-For` (`forwarded_for`, every header's entries in order) is read
/// from the right, skipping trusted proxies, and the first address that is not one is the
/// source. A malformed entry stops the walk at the last address known to be good, so a
/// client cannot inject an address through a proxy that appends to what it was sent.
pub fn source_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNetwork]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut source = peer;
    let entries = forwarded_for
        .iter()
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in entries.into_iter().rev() {
        if !is_trusted(source) {
            break;
        }
        match entry.parse::<IpAddr>() {
            Ok(ip) => source = ip,
            Err(_) => break,
        }
    }
    source
}

/// The user agent as recorded: control characters dropped, at most [`MAX_USER_AGENT`]
/// characters.
pub fn clean_user_agent(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// How a fetcher is named in messages: `"Epic-JWKS/1.0 from 203.0.113.0/24"`.
pub fn label(user_agent: &str, network: &str) -> String {
    let agent = if user_agent.is_empty() {
        "(no user agent)"
    } else {
        user_agent
    };
    format!("{agent} from {network}")
}

type FetcherKey = (Arc<str>, String, String);

/// Fetches waiting for the next flush, merged per fetcher.
#[derive(Default)]
struct Pending {
    fetchers: HashMap<FetcherKey, Fetcher>,
}

impl Pending {
    fn merge(&mut self, f: Fetcher) {
        let key = (
            Arc::<str>::from(f.keyset.as_str()),
            f.user_agent.clone(),
            f.network.clone(),
        );
        match self.fetchers.get_mut(&key) {
            Some(known) => merge_into(known, &f),
            None => {
                self.fetchers.insert(key, f);
            }
        }
    }
}

fn merge_into(known: &mut Fetcher, f: &Fetcher) {
    known.first_seen = known.first_seen.min(f.first_seen);
    known.last_seen = known.last_seen.max(f.last_seen);
    for kid in &f.kids {
        match known.kids.iter_mut().find(|k| k.kid == kid.kid) {
            Some(k) => {
                k.first_served = k.first_served.min(kid.first_served);
                k.last_served = k.last_served.max(kid.last_served);
            }
            None => known.kids.push(kid.clone()),
        }
    }
}

/// What one kid's record says: whether any fetcher of its key set was served it, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KidServed {
    /// How many recorded fetchers were served it.
    pub fetchers: usize,
    /// The first time any of them was.
    pub first_served: Option<UnixTime>,
    /// The last time any of them was.
    pub last_served: Option<UnixTime>,
}

/// The fetcher record of one process: the in-memory accumulator and the store behind it.
pub struct FetcherLog {
    store: Arc<dyn Store>,
    pending: Mutex<Pending>,
    /// Fetches not recorded because [`PENDING_CAP`] fetchers were waiting already.
    dropped: AtomicU64,
    /// Whether the last flush failed (logged once per failing streak).
    failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for FetcherLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetcherLog").finish_non_exhaustive()
    }
}

impl FetcherLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        FetcherLog {
            store,
            pending: Mutex::new(Pending::default()),
            dropped: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Notes that `user_agent` from `source` was served `kids` of `keyset` at `now`. Cheap
    /// and never waits for I/O: the JWKS handler calls it on every answer.
    pub fn record(
        &self,
        keyset: &str,
        user_agent: &str,
        source: IpAddr,
        kids: &[String],
        now: UnixTime,
    ) {
        let fetcher = Fetcher {
            keyset: keyset.to_owned(),
            user_agent: clean_user_agent(user_agent),
            network: network_of(source),
            first_seen: now,
            last_seen: now,
            kids: kids
                .iter()
                .map(|kid| ServedKid {
                    kid: kid.clone(),
                    first_served: now,
                    last_served: now,
                })
                .collect(),
        };
        let mut pending = match self.pending.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (
            Arc::<str>::from(keyset),
            fetcher.user_agent.clone(),
            fetcher.network.clone(),
        );
        if pending.fetchers.len() >= PENDING_CAP && !pending.fetchers.contains_key(&key) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.merge(fetcher);
    }

    /// Writes what accumulated since the last flush, in one store transaction, at `now`
    /// (which decides what has aged out). On failure the fetches stay in memory for the next
    /// flush, and the error is returned.
    pub async fn flush(&self, now: UnixTime) -> Result<(), StoreError> {
        let batch: Vec<Fetcher> = {
            let mut pending = match self.pending.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut pending.fetchers)
                .into_values()
                .collect()
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                fetches = dropped,
                limit = PENDING_CAP,
                "fetches of new fetchers were not recorded: too many distinct fetchers between two flushes"
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        match self
            .store
            .record_fetchers(&batch, FETCHERS_PER_KEYSET, now - RETENTION)
            .await
        {
            Ok(written) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the fetcher record is written again");
                }
                if written.refused_at_cap > 0 {
                    tracing::warn!(
                        fetchers = written.refused_at_cap,
                        limit = FETCHERS_PER_KEYSET,
                        "new fetchers were not recorded: their key set has as many as the record keeps; older ones leave it 90 days after their last fetch"
                    );
                }
                Ok(())
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot write the fetcher record; keeping the fetches in memory and retrying");
                }
                let mut pending = match self.pending.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for fetcher in batch {
                    pending.merge(fetcher);
                }
                Err(e)
            }
        }
    }

    /// Every recorded fetcher of `keyset`, most recent fetch first (from the store: every
    /// replica's).
    pub async fn fetchers(&self, keyset: &str) -> Result<Vec<Fetcher>, StoreError> {
        self.store.fetchers(keyset).await
    }

    /// The last fetch of `keyset`'s JWKS this process knows of: in the store, or noted in
    /// memory and not yet written (the last few seconds). `Ok(None)`: nobody fetched it.
    pub async fn last_fetch(&self, keyset: &str) -> Result<Option<UnixTime>, StoreError> {
        let pending = {
            let pending = match self.pending.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            pending
                .fetchers
                .values()
                .filter(|f| f.keyset == keyset)
                .map(|f| f.last_seen)
                .max()
        };
        let stored = self
            .fetchers(keyset)
            .await?
            .iter()
            .map(|f| f.last_seen)
            .max();
        Ok(pending.max(stored))
    }

    /// Whether any recorded fetcher of `keyset` was served `kid`, and when.
    pub async fn kid_served(&self, keyset: &str, kid: &str) -> Result<KidServed, StoreError> {
        Ok(kid_served_in(&self.fetchers(keyset).await?, kid))
    }
}

/// What `fetchers` say about `kid` (see [`FetcherLog::kid_served`]).
pub fn kid_served_in(fetchers: &[Fetcher], kid: &str) -> KidServed {
    let mut out = KidServed::default();
    for served in fetchers
        .iter()
        .filter_map(|f| f.kids.iter().find(|k| k.kid == kid))
    {
        out.fetchers += 1;
        out.first_served = Some(
            out.first_served
                .map_or(served.first_served, |t| t.min(served.first_served)),
        );
        out.last_served = Some(
            out.last_served
                .map_or(served.last_served, |t| t.max(served.last_served)),
        );
    }
    out
}

/// The gate's view of `fetchers` for the successor `next_kid`.
pub fn sightings(fetchers: &[Fetcher], next_kid: &str) -> Vec<crate::rotation::Sighting> {
    fetchers
        .iter()
        .map(|f| crate::rotation::Sighting {
            fetcher: label(&f.user_agent, &f.network),
            last_seen: f.last_seen,
            served_next_at: f
                .kids
                .iter()
                .find(|k| k.kid == next_kid)
                .map(|k| k.first_served),
        })
        .collect()
}

/// Flushes `log` every [`FLUSH_INTERVAL`] until the task is dropped; the service flushes
/// once more at shutdown.
pub async fn run_flusher(log: Arc<FetcherLog>) {
    loop {
        tokio::time::sleep(FLUSH_INTERVAL).await;
        // A failure is logged by `flush` and retried at the next interval.
        let _ = log.flush(crate::unix_now()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn fetchers_are_keyed_by_their_ipv4_24_or_ipv6_48() {
        assert_eq!(network_of(ip("203.0.113.77")), "203.0.113.0/24");
        assert_eq!(network_of(ip("::ffff:203.0.113.77")), "203.0.113.0/24");
        assert_eq!(network_of(ip("2001:db8:abcd:12::1")), "2001:db8:abcd::/48");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [IpNetwork::parse("10.0.0.0/8").unwrap()];
        // Untrusted peer: the header is ignored.
        assert_eq!(
            source_address(ip("198.51.100.9"), &["203.0.113.5"], &trusted),
            ip("198.51.100.9")
        );
        // Trusted peer: the rightmost address that is not a trusted proxy.
        assert_eq!(
            source_address(
                ip("10.0.0.2"),
                &["1.2.3.4, 203.0.113.5", "10.0.0.7"],
                &trusted
            ),
            ip("203.0.113.5")
        );
        // Garbage stops the walk at the last good address.
        assert_eq!(
            source_address(ip("10.0.0.2"), &["203.0.113.5, bogus"], &trusted),
            ip("10.0.0.2")
        );
        // No proxies configured: never believed.
        assert_eq!(
            source_address(ip("10.0.0.2"), &["203.0.113.5"], &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn user_agents_are_cut_and_cleaned() {
        assert_eq!(clean_user_agent("Epic\u{7}/1.0\r\n"), "Epic/1.0");
        assert_eq!(clean_user_agent(&"x".repeat(500)).len(), MAX_USER_AGENT);
        assert_eq!(label("", "10.0.0.0/24"), "(no user agent) from 10.0.0.0/24");
    }

    #[tokio::test]
    async fn fetches_accumulate_in_memory_and_reach_the_store_at_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let master = Arc::new(crate::keys::MasterKey::generate().0);
        let store = crate::store::test_store(dir.path(), master).await;
        let log = FetcherLog::new(store.clone());
        let kids = ["a".to_owned(), "b".to_owned()];
        log.record("default", "Epic/1", ip("203.0.113.5"), &kids[..1], 100);
        log.record("default", "Epic/1", ip("203.0.113.200"), &kids, 160);
        log.record("default", "Cerner", ip("2001:db8::1"), &kids, 170);
        assert!(
            log.fetchers("default").await.unwrap().is_empty(),
            "nothing written before the flush"
        );
        log.flush(200).await.unwrap();
        let fetchers = log.fetchers("default").await.unwrap();
        assert_eq!(fetchers.len(), 2, "{fetchers:?}");
        let epic = fetchers.iter().find(|f| f.user_agent == "Epic/1").unwrap();
        assert_eq!((epic.first_seen, epic.last_seen), (100, 160));
        assert_eq!(epic.network, "203.0.113.0/24");
        let a = epic.kids.iter().find(|k| k.kid == "a").unwrap();
        assert_eq!((a.first_served, a.last_served), (100, 160));
        let b = epic.kids.iter().find(|k| k.kid == "b").unwrap();
        assert_eq!(b.first_served, 160);
        // A later batch only moves last times later.
        log.record("default", "Epic/1", ip("203.0.113.5"), &kids, 300);
        log.flush(300).await.unwrap();
        let served = log.kid_served("default", "b").await.unwrap();
        assert_eq!(
            served,
            KidServed {
                fetchers: 2,
                first_served: Some(160),
                last_served: Some(300)
            }
        );
        assert!(log.fetchers("other").await.unwrap().is_empty());

        // At the cap a new fetcher is refused and the ones on record stay; a fetcher whose
        // last fetch is older than the retention leaves.
        let newcomer = Fetcher {
            user_agent: "flood".into(),
            ..epic.clone()
        };
        let written = store.record_fetchers(&[newcomer], 2, 0).await.unwrap();
        assert_eq!(written.refused_at_cap, 1);
        assert_eq!(log.fetchers("default").await.unwrap().len(), 2);
        let written = store.record_fetchers(&[], 2, 250).await.unwrap();
        assert_eq!(written.pruned, 1, "Cerner last fetched at 170");
        let left = log.fetchers("default").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].user_agent, "Epic/1");
    }
}
