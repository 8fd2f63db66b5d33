//! Retry policies: how many attempts a job gets and how long to wait between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a job is retried after a failed attempt: exponential backoff with jitter.
///
/// The delay before attempt `n + 1` (after `n` failed attempts) is
/// `min(initial_backoff * base^(n-1), max_backoff)`, then scaled by a random factor in
/// `[1 - jitter, 1 + jitter]` so that many jobs failing together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `1` means never retry.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Factor by which each further delay grows.
    pub base: f64,
    /// Upper bound on any delay, in milliseconds.
    pub max_backoff_ms: u64,
    /// Fraction of the delay, from 0 to 1, by which it is randomly spread.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 20 attempts, starting at 1 s and doubling up to 1 h, with 20% jitter: about a day of
    /// retries before a job is given up on.
    fn default() -> Self {
        Self {
            max_attempts: 20,
            initial_backoff_ms: 1_000,
            base: 2.0,
            max_backoff_ms: 3_600_000,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries: one attempt only.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// A policy of `max_attempts` attempts with the given first delay, doubling, and no jitter.
    pub fn exponential(max_attempts: u32, initial_backoff: Duration) -> Self {
        Self {
            max_attempts,
            initial_backoff_ms: u64::try_from(initial_backoff.as_millis()).unwrap_or(u64::MAX),
            jitter: 0.0,
            ..Self::default()
        }
    }

    /// Checks that the policy makes sense.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for zero attempts, a base below 1, a jitter outside `0..=1`, or
    /// a maximum delay shorter than the first.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("retry max_attempts must be at least 1"));
        }
        if !(self.base.is_finite() && self.base >= 1.0) {
            return Err(Error::invalid(format!(
                "retry base must be a number of at least 1, not {}",
                self.base
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid(format!(
                "retry jitter must be between 0 and 1, not {}",
                self.jitter
            )));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(Error::invalid(
                "retry max_backoff_ms must not be less than initial_backoff_ms",
            ));
        }
        Ok(())
    }

    /// Whether a job that has made `attempts` attempts may make another.
    pub fn allows_another(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// The delay after `attempts` failed attempts, with a fresh random jitter.
    pub fn delay_after(&self, attempts: u32) -> Duration {
        self.delay_with_jitter(attempts, fastrand::f64())
    }

    /// The delay after `attempts` failed attempts, with jitter drawn from `sample` in `[0, 1)`:
    /// 0 gives the shortest delay, 0.5 the nominal one, and values near 1 the longest.
    pub fn delay_with_jitter(&self, attempts: u32, sample: f64) -> Duration {
        let exponent = i32::try_from(attempts.saturating_sub(1)).unwrap_or(i32::MAX);
        let nominal = (self.initial_backoff_ms as f64) * self.base.powi(exponent);
        let capped = nominal.min(self.max_backoff_ms as f64);
        let spread = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        Duration::from_millis((capped * spread).max(0.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            base: 2.0,
            max_backoff_ms: 1_000,
            jitter: 0.0,
        };
        let delays: Vec<u64> = (1..=6)
            .map(|n| policy.delay_with_jitter(n, 0.3).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_spreads_the_delay_within_its_fraction() {
        let policy = RetryPolicy {
            jitter: 0.5,
            ..RetryPolicy::exponential(5, Duration::from_millis(1000))
        };
        assert_eq!(policy.delay_with_jitter(1, 0.0), Duration::from_millis(500));
        assert_eq!(
            policy.delay_with_jitter(1, 0.5),
            Duration::from_millis(1000)
        );
        assert_eq!(
            policy.delay_with_jitter(1, 1.0),
            Duration::from_millis(1500)
        );
        for _ in 0..100 {
            let d = policy.delay_after(1).as_millis();
            assert!((500..=1500).contains(&d), "{d}");
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::exponential(3, Duration::from_secs(1));
        assert!(policy.allows_another(2));
        assert!(!policy.allows_another(3));
        assert!(!RetryPolicy::never().allows_another(1));
    }

    #[test]
    fn nonsense_policies_are_rejected() {
        assert!(RetryPolicy::default().validate().is_ok());
        let bad = [
            RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                base: 0.5,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                base: f64::NAN,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                jitter: 1.5,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                max_backoff_ms: 1,
                ..RetryPolicy::default()
            },
        ];
        for policy in bad {
            assert!(policy.validate().is_err(), "{policy:?}");
        }
    }
}
