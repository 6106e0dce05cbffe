//! Per-caller rate limiting: a token bucket per caller name, in memory.
//!
//! Each caller may make `rate_per_minute` requests per minute on average, with bursts of up
//! to a tenth of that (at least 1). Time is a parameter, so tests need no sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets of all callers.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
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
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn retry_after_reflects_a_slow_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.check("slow", 2, t0).is_ok());
        assert_eq!(limiter.check("slow", 2, t0), Err(30));
    }
}
