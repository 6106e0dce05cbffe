//! What every handler can reach: the shared request state and the request counters.
//!
//! Its own module, below `auth` and the handlers, so that they can all read it without
//! importing one another or the route tables in `http`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aws_lc_rs::digest;
use subtle::ConstantTimeEq;

use crate::config::{Access, ConfigUrl, IpNetwork};
use crate::fetchers::FetcherLog;
use crate::keyring::Keyring;
use crate::metrics::CounterVec;
use crate::ratelimit::RateLimiter;
use crate::rotation::UnixTime;
use crate::signing::SigningService;
use crate::store::metered::StoreErrors;
use crate::tls::ListenerTls;
use crate::tokens::TokenService;
use crate::trail::AuditMetrics;

/// What every handler can reach.
pub struct State {
    pub keyring: Arc<Keyring>,
    pub admin_token: TokenHash,
    /// `server.public_url`, without a trailing slash; empty when unset (paths are then
    /// shown relative to the public listener).
    pub public_url: String,
    /// Clients and callers; replaced whole on reload.
    pub access: RwLock<Arc<Access>>,
    /// Signs and records every assertion, for callers and for token requests.
    pub signing: Arc<SigningService>,
    pub limiter: RateLimiter,
    pub tokens: Arc<TokenService>,
    pub metrics: Metrics,
    /// Who fetched each JWKS: recorded by the public handlers, listed by the admin API.
    pub fetchers: Arc<FetcherLog>,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNetwork>,
    /// The last refused requests of this process, for the status page.
    pub refusals: RecentRefusals,
    /// Status-page sessions logged out on this process, until they expire.
    pub status_logouts: Mutex<HashMap<String, UnixTime>>,
    /// The HTTPS of each listener that has it (the ones `app` re-reads), for the expiry
    /// of their certificates on `/metrics`.
    pub tls: Vec<Arc<ListenerTls>>,
}

/// Request counters, bumped by the handlers and read by `GET /metrics`. Every label value
/// comes from the configuration, the keyring or the problem table, never from a request.
#[derive(Debug, Default)]
pub struct Metrics {
    pub jwks_served: AtomicU64,
    pub jwks_not_modified: AtomicU64,
    pub assertions_issued: AtomicU64,
    pub tokens_from_cache: AtomicU64,
    pub tokens_fetched: AtomicU64,
    pub token_failures: AtomicU64,
    /// JWKS requests by `[keyset, status]` (`200` or `304`).
    pub jwks_requests: CounterVec<2>,
    /// Problem answers by `[reason]`, the problem kind's slug (both listeners).
    pub refused: CounterVec<1>,
    /// Token requests answered from the cache, by `[client]`.
    pub token_cache_hits: CounterVec<1>,
    /// Token requests the cache could not answer, by `[client]`.
    pub token_cache_misses: CounterVec<1>,
    /// Store errors by operation, counted by the store wrapper `app` installs.
    pub store_errors: Arc<StoreErrors>,
    /// The audit writer's latency and the assertions it made durable.
    pub audit: Arc<AuditMetrics>,
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl State {
    /// The state of a running service: `public_url` is `server.public_url` (the text as
    /// configured, which has no trailing slash); the rate limiter and the counters start
    /// empty.
    pub fn new(
        keyring: Arc<Keyring>,
        admin_token: TokenHash,
        public_url: Option<&ConfigUrl>,
        access: Access,
        signing: Arc<SigningService>,
        tokens: Arc<TokenService>,
    ) -> Self {
        State {
            admin_token,
            public_url: public_url.map_or_else(String::new, |url| url.as_str().to_owned()),
            access: RwLock::new(Arc::new(access)),
            signing,
            limiter: RateLimiter::default(),
            fetchers: Arc::new(FetcherLog::new(keyring.store().clone())),
            keyring,
            tokens,
            metrics: Metrics::default(),
            trusted_proxies: Vec::new(),
            refusals: RecentRefusals::default(),
            status_logouts: Mutex::new(HashMap::new()),
            tls: Vec::new(),
        }
    }

    /// Records JWKS fetches in `fetchers` (shared with the token service, which reads it
    /// as evidence) instead of a record of its own.
    pub fn with_fetchers(mut self, fetchers: Arc<FetcherLog>) -> Self {
        self.fetchers = fetchers;
        self
    }

    /// Believes `X-Forwarded-For` from `proxies` (`server.trusted_proxies`).
    pub fn with_trusted_proxies(mut self, proxies: Vec<IpNetwork>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The same state, measured into `metrics` (whose store and audit parts are shared with
    /// the store wrapper and the audit writer `app` made).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Shows the certificate expiry of `listeners` (the HTTPS listeners) on `/metrics`.
    pub fn with_tls(mut self, listeners: Vec<Arc<ListenerTls>>) -> Self {
        self.tls = listeners;
        self
    }

    /// The clients and callers in force now.
    pub fn access(&self) -> Arc<Access> {
        match self.access.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new set of clients and callers in force.
    pub fn set_access(&self, access: Access) {
        let access = Arc::new(access);
        match self.access.write() {
            Ok(mut guard) => *guard = access,
            Err(poisoned) => *poisoned.into_inner() = access,
        }
    }
}

/// One refused request, as the status page lists it: nothing from the request but its
/// route pattern (never its path, query, headers or body, so never a token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentRefusal {
    pub time: UnixTime,
    pub method: String,
    /// The matched route pattern (`/admin/v1/keys/{kid}/revoke`), or `(no route)`.
    pub route: String,
    pub status: u16,
    /// The problem kind's slug.
    pub slug: &'static str,
    /// The authenticated caller or `admin`, when authentication got that far.
    pub actor: Option<String>,
}

/// A bounded ring of the last [`RecentRefusals::CAPACITY`] refusals: memory stays fixed
/// however many requests are refused. Per process (each replica shows its own).
#[derive(Debug, Default)]
pub struct RecentRefusals {
    ring: Mutex<VecDeque<RecentRefusal>>,
}

impl RecentRefusals {
    pub const CAPACITY: usize = 50;

    pub fn record(&self, refusal: RecentRefusal) {
        let mut ring = match self.ring.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ring.len() == Self::CAPACITY {
            ring.pop_front();
        }
        ring.push_back(refusal);
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<RecentRefusal> {
        let ring = match self.ring.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        ring.iter().rev().cloned().collect()
    }
}

/// SHA-256 of a bearer token.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        TokenHash(out)
    }

    /// A digest computed elsewhere (a caller's configured `token_sha256`).
    pub fn from_sha256(digest: [u8; 32]) -> Self {
        TokenHash(digest)
    }

    /// The digest itself (not a secret: what the status page binds its sessions to, so a
    /// new admin token ends every session made under the old one).
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash([elided])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_ring_keeps_only_the_newest() {
        let ring = RecentRefusals::default();
        for i in 0..(RecentRefusals::CAPACITY as i64 + 7) {
            ring.record(RecentRefusal {
                time: i,
                method: "GET".into(),
                route: "/x".into(),
                status: 404,
                slug: "not-found",
                actor: None,
            });
        }
        let listed = ring.newest_first();
        assert_eq!(listed.len(), RecentRefusals::CAPACITY);
        assert_eq!(listed[0].time, RecentRefusals::CAPACITY as i64 + 6);
        assert_eq!(listed.last().map(|r| r.time), Some(7));
    }
}
