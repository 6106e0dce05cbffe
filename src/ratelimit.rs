//! Per-caller rate limiting: a token bucket per caller name, in memory.
//!
//! Each caller may make `rate_per_minute` requests per minute on average, with bursts of up
//! to a tenth of that (at least 1). Time is a parameter, so tests need no sleeping. A bucket
//! that has refilled is the same as none, so full buckets are dropped once there are many:
//! keys that name client addresses cannot grow the map without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    capacity: f64,
    per_second: f64,
}

impl Bucket {
    /// Whether the bucket has refilled by `now`: then it is the same as no bucket.
    fn full_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.capacity
    }
}

/// Above this many buckets, full ones are dropped. Keys include client addresses (the
/// status page's sign-in form), so the map must not grow with every address that ever
/// tried.
const PRUNE_ABOVE: usize = 1024;

#[derive(Debug, Default)]
struct Buckets {
    by_key: HashMap<String, Bucket>,
    /// The size at which the next prune runs: twice what the last one kept, so a map full
    /// of busy buckets is not scanned on every request...
    prune_at: usize,
    /// ...and once a minute while above [`PRUNE_ABOVE`], since a minute refills every
    /// bucket that was limited to a rate per minute.
    pruned: Option<Instant>,
}

/// Buckets of all callers.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<Buckets>,
}

fn capacity(rate_per_minute: u32) -> f64 {
    (f64::from(rate_per_minute) / 10.0).max(1.0)
}

impl RateLimiter {
    /// Takes one token for `caller`. On refusal returns the whole seconds until a token is
    /// available (for `Retry-After`).
    pub fn check(&self, caller: &str, rate_per_minute: u32, now: Instant) -> Result<(), u64> {
        let per_second = f64::from(rate_per_minute) / 60.0;
        let capacity = capacity(rate_per_minute);
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let size = buckets.by_key.len();
        let a_minute_since = buckets
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60));
        if size >= PRUNE_ABOVE && (size >= buckets.prune_at || a_minute_since) {
            buckets.by_key.retain(|_, bucket| !bucket.full_at(now));
            buckets.prune_at = 2 * buckets.by_key.len();
            buckets.pruned = Some(now);
        }
        let bucket = buckets.by_key.entry(caller.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            capacity,
            per_second,
        });
        // A caller's configured rate can change on reload.
        bucket.capacity = capacity;
        bucket.per_second = per_second;
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    /// How many buckets are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        match self.buckets.lock() {
            Ok(guard) => guard.by_key.len(),
            Err(poisoned) => poisoned.into_inner().by_key.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(limiter.check("a", 60, t0).is_ok());
        }
        assert_eq!(limiter.check("a", 60, t0), Err(1));
        assert!(
            limiter.check("b", 60, t0).is_ok(),
            "callers have their own buckets"
        );
        assert!(limiter.check("a", 60, t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.check("a", 60, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn buckets_that_refilled_are_forgotten_so_many_sources_cannot_grow_the_map() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for n in 0..5000 {
            assert!(limiter.check(&format!("status-login/{n}"), 10, t0).is_ok());
        }
        // A minute later every one of those buckets is full again: the same as none.
        let later = t0 + Duration::from_secs(61);
        for _ in 0..6 {
            assert!(limiter.check("busy", 60, later).is_ok());
        }
        assert!(
            limiter.len() <= PRUNE_ABOVE,
            "{} buckets kept after they all refilled",
            limiter.len()
        );
        // Only full buckets are forgotten: a caller that spent its burst stays limited
        // however many others arrive.
        for n in 0..5000 {
            let _ = limiter.check(&format!("other/{n}"), 10, later);
        }
        assert_eq!(limiter.check("busy", 60, later), Err(1));
    }

    #[test]
    fn retry_after_reflects_a_slow_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.check("slow", 2, t0).is_ok());
        assert_eq!(limiter.check("slow", 2, t0), Err(30));
    }
}
