//! Failing fast while a networked database is down: the PostgreSQL backend's guard between
//! a request and a pool that would otherwise spend its whole acquire timeout (5 s) trying
//! to connect before saying so.
//!
//! A failure that looks like a lost database (a broken or refused connection, a pool that
//! timed out, the server shutting down) or a connection that is slow to come makes the
//! store *suspect* an outage: one background probe opens a connection of its own, with a
//! short timeout. If it fails, the database is *down*: every operation is refused at once
//! ([`StoreError::Unavailable`], answered 503 with `Retry-After`), requests already waiting
//! for a connection are released with the same answer, and the probe retries every
//! [`PROBE_PAUSE`] until a connection succeeds; then the database is up again and requests
//! use the pool as before. Only the probe ever waits on the network meanwhile, so the
//! refusals stay prompt however long the outage lasts, and recovery needs no restart.
//!
//! A probe that succeeds clears the suspicion at once: one connection killed on its own
//! (an idle timeout in a proxy, `pg_terminate_backend`) never refuses anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::StoreError;

/// How long a request waits for a pooled connection before the store suspects an outage
/// and probes (the wait goes on meanwhile: a busy pool is not an outage).
pub(crate) const SUSPECT_AFTER: Duration = Duration::from_millis(500);

/// How long the probe's own connection may take: a database that does not answer within
/// this is down, as far as callers are concerned.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause between two probes while the database is down: the longest a recovered
/// database waits to be used again (plus one connection).
pub(crate) const PROBE_PAUSE: Duration = Duration::from_millis(500);

/// One attempt to reach the database; the error as text, for the log and the refusal.
pub(crate) type ProbeFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Whether the database is down, and the one probe that finds out; cheap to clone (all
/// clones share one state).
#[derive(Clone)]
pub(crate) struct Outage(Arc<Inner>);

struct Inner {
    /// `Some(reason)` while the database is down.
    down: watch::Sender<Option<String>>,
    /// Whether a probe task is running (at most one is).
    probing: AtomicBool,
    /// Set by a failure noted while a probe runs: the probe then goes on even if it
    /// connects, since that failure may be newer than its connection.
    again: AtomicBool,
    /// When a probe last reached the database: a slow connection right after it is not
    /// probed again, so a busy pool does not turn into a stream of probe connections.
    reached_at: Mutex<Option<Instant>>,
    probe: ProbeFn,
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outage")
            .field("down", &self.0.down.borrow().is_some())
            .finish_non_exhaustive()
    }
}

impl Outage {
    pub(crate) fn new(probe: ProbeFn) -> Self {
        Outage(Arc::new(Inner {
            down: watch::channel(None).0,
            probing: AtomicBool::new(false),
            again: AtomicBool::new(false),
            reached_at: Mutex::new(None),
            probe,
        }))
    }

    /// Refuses at once while the database is down.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &*self.0.down.borrow() {
            Some(reason) => Err(refusal(reason)),
            None => Ok(()),
        }
    }

    /// Returns once the database is found down, with the refusal to answer.
    pub(crate) async fn went_down(&self) -> StoreError {
        let mut down = self.0.down.subscribe();
        let reason = match down.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as `self`; unreachable in practice.
            Err(_) => "the outage guard has stopped".to_owned(),
        };
        refusal(&reason)
    }

    /// A failure suggested the database is gone: starts the probe, or makes the running one
    /// probe once more.
    pub(crate) fn suspect(&self) {
        self.0.again.store(true, Ordering::SeqCst);
        if !self.0.probing.swap(true, Ordering::SeqCst) {
            tokio::spawn(probe_until_reached(self.0.clone()));
        }
    }

    /// A connection is slow to come (longer than [`SUSPECT_AFTER`]): probes unless a probe
    /// is running or reached the database less than [`PROBE_PAUSE`] ago (a busy pool is
    /// slow too).
    pub(crate) fn suspect_slow(&self) {
        let recently_reached =
            lock(&self.0.reached_at).is_some_and(|at| at.elapsed() < PROBE_PAUSE);
        if !recently_reached {
            self.suspect();
        }
    }

    /// Notes an operation's outcome: a failure that looks like a lost database makes the
    /// store suspect an outage.
    pub(crate) fn observe<T>(&self, result: &Result<T, StoreError>) {
        if let Err(e) = result {
            if is_connection_failure(e) {
                self.suspect();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn refusal(reason: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "the database is unreachable ({reason}); refused at once while a probe retries"
    ))
}

/// The probe task: probes until the database answers, marking it down after the first
/// failure and up again after the first success.
async fn probe_until_reached(inner: Arc<Inner>) {
    loop {
        inner.again.store(false, Ordering::SeqCst);
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, (inner.probe)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no connection within {PROBE_TIMEOUT:?}")),
        };
        match outcome {
            Ok(()) => {
                *lock(&inner.reached_at) = Some(Instant::now());
                let was_down = inner.down.send_replace(None).is_some();
                if was_down {
                    info!("the database is reachable again; serving requests from it");
                }
                if inner.again.load(Ordering::SeqCst) {
                    // A failure was noted after this probe began: probe it too.
                    continue;
                }
                inner.probing.store(false, Ordering::SeqCst);
                // One noted between the check above and now would have found a probe
                // running and left it to this one.
                if inner.again.load(Ordering::SeqCst) && !inner.probing.swap(true, Ordering::SeqCst)
                {
                    continue;
                }
                return;
            }
            Err(reason) => {
                let was_down = inner.down.send_replace(Some(reason.clone())).is_some();
                if !was_down {
                    warn!(error = %reason, "the database is unreachable; refusing what needs it at once (503) and probing it every {PROBE_PAUSE:?}; the JWKS is served from memory");
                }
            }
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}

/// Whether `e` says the connection to the database is gone or cannot be made (as opposed
/// to a query the database refused).
pub(crate) fn is_connection_failure(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // SQLSTATE class 08 (connection exception) and 57P (the server shutting down, or
        // starting up: "cannot connect now").
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A probe whose outcome the test sets, counting its calls.
    fn switchable() -> (Outage, Arc<AtomicBool>, Arc<AtomicUsize>) {
        let reachable = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (r, c) = (reachable.clone(), calls.clone());
        let probe: ProbeFn = Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            let up = r.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".to_owned())
                }
            })
        });
        (Outage::new(probe), reachable, calls)
    }

    #[tokio::test]
    async fn a_failed_probe_refuses_at_once_until_a_probe_reaches_the_database() {
        let (outage, reachable, calls) = switchable();
        assert!(outage.check().is_ok());
        let waiting = tokio::spawn({
            let outage = outage.clone();
            async move { outage.went_down().await }
        });
        outage.suspect();
        outage.suspect(); // one probe at a time
        let refused = waiting.await.unwrap();
        assert!(refused.is_storage_failure(), "{refused}");
        assert!(outage.check().is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Still down after several probes; up after the first that connects.
        tokio::time::sleep(PROBE_PAUSE * 3).await;
        assert!(outage.check().is_err());
        reachable.store(true, Ordering::SeqCst);
        let back = Instant::now();
        while outage.check().is_err() {
            assert!(back.elapsed() < PROBE_PAUSE * 2, "up again after one pause");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let probes = calls.load(Ordering::SeqCst);
        // A slow connection right after a successful probe is not probed again.
        outage.suspect_slow();
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), probes);
    }

    #[tokio::test]
    async fn a_probe_that_reaches_the_database_refuses_nothing() {
        let (outage, reachable, calls) = switchable();
        reachable.store(true, Ordering::SeqCst);
        outage.suspect();
        tokio::time::sleep(PROBE_PAUSE).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(outage.check().is_ok());
    }
}
