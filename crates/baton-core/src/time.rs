//! Time as Baton sees it: millisecond timestamps and an injectable [`Clock`].
//!
//! Expiry is always judged by the backend's clock. A backend that keeps time itself (the
//! in-memory one) reads a [`Clock`], so tests can move time with [`ManualClock`] instead of
//! sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: milliseconds since the Unix epoch, as read from a backend's clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// A timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This timestamp moved `duration` later, saturating at the end of time.
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(duration)))
    }

    /// This timestamp moved `duration` earlier, saturating at the start of time.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(duration)))
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
            Err(_) => UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs()),
        }
    }

    /// The same instant as a timestamp, truncated to milliseconds.
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => Self(duration_millis(since)),
            Err(before) => Self(-duration_millis(before.duration())),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A source of the current time.
///
/// Backends that keep time themselves read one; backends whose server keeps time (Redis `TIME`,
/// SQL `now()`) do not, so clock drift between client hosts cannot create two holders.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A clock that moves only when told to: expiry tests advance it instead of sleeping.
///
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(start.as_millis())),
        }
    }

    /// Moves the clock forward by `duration`.
    pub fn advance(&self, duration: Duration) {
        self.millis
            .fetch_add(duration_millis(duration), Ordering::SeqCst);
    }

    /// Sets the clock to `time`, which may be earlier than now (to simulate a clock step).
    pub fn set(&self, time: Timestamp) {
        self.millis.store(time.as_millis(), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// A clock stopped at 2025-01-01T00:00:00Z, so timestamps look plausible in test output.
    fn default() -> Self {
        Self::new(Timestamp::from_millis(1_735_689_600_000))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::default();
        let copy = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        copy.advance(Duration::from_secs(5));
        assert_eq!(clock.now().duration_since(start), Duration::from_secs(5));
    }

    #[test]
    fn timestamps_round_trip_through_system_time() {
        let now = SystemClock.now();
        assert_eq!(Timestamp::from_system_time(now.to_system_time()), now);
        let before = Timestamp::from_millis(-1500);
        assert_eq!(Timestamp::from_system_time(before.to_system_time()), before);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(i64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)).as_millis(),
            i64::MAX
        );
        assert_eq!(Timestamp::EPOCH.duration_since(t), Duration::ZERO);
    }
}
