//! [`SyncConfig`]: the pool, the identity and the timings of a [`SyncManager`](crate::SyncManager).

use std::time::Duration;

use baton_core::{Error, MAX_NAME_LEN, Owner, PoolName, Result, validate_ttl};

/// What is appended to the account pool's name to name the pool that lists the managers
/// sharing it (see [`SyncConfig::members_pool`]).
pub const MEMBERS_SUFFIX: &str = ":members";

/// How a [`SyncManager`](crate::SyncManager) shares a pool of accounts: plain settings, built by
/// the caller (the binary reads them from its configuration).
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The pool of accounts shared by every manager with this pool name.
    pub pool: PoolName,
    /// Who this manager is to the backend; `host-pid` by default ([`Owner::local`]). Two running
    /// managers must never share an identity.
    pub identity: Owner,
    /// How long a heartbeat lasts; the manager beats every fifth of it. A manager whose beats
    /// stop is dead once this has passed: its workers stop and other managers take its accounts.
    pub heartbeat_ttl: Duration,
    /// How long one claim lasts. When it ends the worker is stopped and the account goes to the
    /// back of the unclaimed list, so that a bad instance cannot hold an account for ever.
    pub claim_period: Duration,
    /// How many accounts above its fair share (`ceil(accounts / live managers)`) a manager may
    /// hold before it hands the excess back. Zero balances exactly; more moves fewer accounts
    /// when managers come and go.
    pub slack: usize,
    /// The pause after each successful claim, so that one manager does not take everything the
    /// moment it starts.
    pub claim_spacing: Duration,
    /// How often the manager reaps the accounts of dead managers, checks its claims against the
    /// backend and rebalances. Accounts of a crashed manager move within
    /// `heartbeat_ttl + maintenance_interval` (plus the claims themselves).
    pub maintenance_interval: Duration,
    /// How often the manager reads the [`AccountSource`](crate::AccountSource) and makes the pool
    /// match it.
    pub source_interval: Duration,
    /// How long a worker asked to stop (hand-back, end of its claim, shutdown) may take before
    /// it is dropped. A worker whose claim is lost is dropped at once.
    pub worker_stop_timeout: Duration,
    /// How long after start-up the manager waits before its first claim, so that managers that
    /// start together see each other and share the accounts from the start.
    pub startup_delay: Duration,
}

impl SyncConfig {
    /// Settings for `pool` with this process's identity and defaults fit for production: a 10 s
    /// heartbeat, 30-minute claims, a slack of one, 50 ms between claims, maintenance every 5 s,
    /// the source read every 30 s.
    pub fn new(pool: PoolName) -> Self {
        let heartbeat_ttl = Duration::from_secs(10);
        Self {
            pool,
            identity: Owner::local(),
            heartbeat_ttl,
            claim_period: Duration::from_secs(30 * 60),
            slack: 1,
            claim_spacing: Duration::from_millis(50),
            maintenance_interval: Duration::from_secs(5),
            source_interval: Duration::from_secs(30),
            worker_stop_timeout: Duration::from_secs(10),
            startup_delay: heartbeat_ttl / 5,
        }
    }

    /// The same settings with the heartbeat TTL set, and the start-up delay set to one beat.
    pub fn with_heartbeat_ttl(mut self, ttl: Duration) -> Self {
        self.heartbeat_ttl = ttl;
        self.startup_delay = ttl / 5;
        self
    }

    /// How often the manager beats: a fifth of [`heartbeat_ttl`](Self::heartbeat_ttl).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_ttl / 5
    }

    /// How much earlier than the backend the manager considers its own heartbeat and claims
    /// expired: a tenth of the heartbeat TTL, so that it stops its workers before anyone else
    /// can take their accounts.
    pub fn safety_margin(&self) -> Duration {
        self.heartbeat_ttl / 10
    }

    /// The pool that lists the identities of the managers sharing [`pool`](Self::pool): the
    /// pool's name followed by [`MEMBERS_SUFFIX`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` if that name is too long.
    pub fn members_pool(&self) -> Result<PoolName> {
        members_pool(&self.pool)
    }

    /// Checks the settings: TTLs in bounds, intervals not zero, a claim period longer than the
    /// safety margin, a pool name short enough for its members pool.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the first setting that is wrong.
    pub fn validate(&self) -> Result<()> {
        validate_ttl(self.heartbeat_ttl)?;
        validate_ttl(self.claim_period)?;
        if self.heartbeat_ttl < Duration::from_millis(50) {
            return Err(Error::invalid("heartbeat_ttl must be at least 50ms"));
        }
        if self.claim_period <= self.safety_margin() * 2 {
            return Err(Error::invalid(
                "claim_period must be longer than a fifth of heartbeat_ttl",
            ));
        }
        for (name, value) in [
            ("maintenance_interval", self.maintenance_interval),
            ("source_interval", self.source_interval),
        ] {
            if value.is_zero() {
                return Err(Error::invalid(format!("{name} must not be zero")));
            }
        }
        if self.pool.as_str().len() + MEMBERS_SUFFIX.len() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "pool name must be at most {} bytes",
                MAX_NAME_LEN - MEMBERS_SUFFIX.len()
            )));
        }
        Ok(())
    }
}

/// The pool that lists the managers sharing `pool`.
///
/// # Errors
///
/// `InvalidInput` if `pool` is too long to take [`MEMBERS_SUFFIX`].
pub fn members_pool(pool: &PoolName) -> Result<PoolName> {
    PoolName::new(format!("{pool}{MEMBERS_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SyncConfig {
        SyncConfig::new(PoolName::new("accounts").unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn defaults_are_valid_and_beat_five_times_per_ttl() {
        let config = config();
        config.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.heartbeat_interval() * 5, config.heartbeat_ttl);
        assert_eq!(
            config.members_pool().map(|p| p.to_string()).ok(),
            Some("accounts:members".to_owned())
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut short = config();
        short.claim_period = Duration::from_millis(100);
        assert!(short.validate().is_err());
        let mut zero = config();
        zero.maintenance_interval = Duration::ZERO;
        assert!(zero.validate().is_err());
        let long =
            SyncConfig::new(PoolName::new("p".repeat(195)).unwrap_or_else(|e| panic!("{e}")));
        assert!(long.validate().is_err());
    }
}
