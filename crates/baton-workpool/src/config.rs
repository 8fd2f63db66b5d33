//! Settings: the pool's own ([`PoolConfig`]) and each job's ([`EnqueueOptions`]).

use std::time::{Duration, SystemTime};

use baton_core::{Error, Owner, PoolName, Result, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many jobs may run at once across the cluster when nothing else was set.
pub const DEFAULT_MAX_PARALLELISM: usize = 10;
/// The most slots a pool may have: `max_parallelism` above this is refused.
pub const MAX_PARALLELISM: usize = 1000;
/// The longest pool name accepted, in bytes, so that every derived queue and lock name fits.
pub const MAX_POOL_NAME_LEN: usize = 140;

/// A work pool's settings, built by the caller (the binary reads them from its configuration).
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The pool's name: every process that runs a pool of this name on one backend shares its
    /// jobs and its parallelism limit.
    pub name: PoolName,
    /// Who this process is in leases and logs; distinct for every member of the pool.
    pub owner: Owner,
    /// The limit used until one is stored with
    /// [`WorkPool::set_max_parallelism`](crate::WorkPool::set_max_parallelism); a stored limit
    /// wins.
    pub max_parallelism: usize,
    /// How long a job's reservation and its parallelism slot last without renewal. A member
    /// that dies is noticed this long after its last renewal; renewals happen every third of it.
    pub lease_ttl: Duration,
    /// The retry behaviour of jobs enqueued without one; `None` (the default) means one attempt.
    pub default_retry: Option<RetryBehavior>,
    /// How often an idle member looks for due work that no wake-up announced (delayed jobs,
    /// retries) and re-reads the stored limit.
    pub poll_interval: Duration,
    /// How often the per-interval report is logged (a minute by default).
    pub report_interval: Duration,
    /// How long a canceled handler may keep running after its cancellation signal before it is
    /// dropped.
    pub cancel_grace: Duration,
    /// How many completion callbacks one member runs at once.
    pub completion_concurrency: usize,
    /// The most jobs this member runs at once, whatever the cluster-wide limit; `None` (the
    /// default) lets it take every free slot.
    pub member_concurrency: Option<usize>,
}

impl PoolConfig {
    /// The defaults for a pool named `name`, run by this process ([`Owner::local`] with a random
    /// suffix, so that several pools in one process are distinct members).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a name that is invalid or longer than [`MAX_POOL_NAME_LEN`].
    pub fn new(name: &str) -> Result<Self> {
        if name.len() > MAX_POOL_NAME_LEN {
            return Err(Error::invalid(format!(
                "pool name is {} bytes, more than the {MAX_POOL_NAME_LEN} allowed",
                name.len()
            )));
        }
        let name = PoolName::new(name)?;
        let owner = Owner::new(format!("{}-{:08x}", Owner::local(), fastrand::u32(..)))?;
        Ok(Self {
            name,
            owner,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            lease_ttl: Duration::from_secs(10),
            default_retry: None,
            poll_interval: Duration::from_millis(500),
            report_interval: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(30),
            completion_concurrency: 4,
            member_concurrency: None,
        })
    }

    /// Checks that the settings make sense together.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit above [`MAX_PARALLELISM`], a lease shorter than
    /// 30 ms, a zero interval, or an invalid default retry behaviour.
    pub fn validate(&self) -> Result<()> {
        if self.max_parallelism > MAX_PARALLELISM {
            return Err(Error::invalid(format!(
                "max_parallelism may be at most {MAX_PARALLELISM}, not {}",
                self.max_parallelism
            )));
        }
        if self.lease_ttl < Duration::from_millis(30) {
            return Err(Error::invalid("lease_ttl must be at least 30ms"));
        }
        baton_core::validate_ttl(self.lease_ttl)?;
        if self.poll_interval.is_zero() || self.report_interval.is_zero() {
            return Err(Error::invalid(
                "poll_interval and report_interval must not be zero",
            ));
        }
        if self.member_concurrency == Some(0) {
            return Err(Error::invalid("member_concurrency must be at least 1"));
        }
        if self.completion_concurrency == 0 {
            return Err(Error::invalid("completion_concurrency must be at least 1"));
        }
        if let Some(retry) = &self.default_retry {
            retry.policy(false).validate()?;
        }
        Ok(())
    }
}

/// How a failed job is retried: `max_attempts` attempts in all, the `n`th retry waiting
/// `initial_backoff * base^(n-1)`, spread by a random factor in `[1 - jitter, 1 + jitter]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryBehavior {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Factor by which each further delay grows.
    pub base: f64,
    /// Fraction by which each delay is randomly spread; 0.5, as by default, gives delays from
    /// half to one and a half times the nominal one.
    pub jitter: f64,
    /// Upper bound on any delay.
    pub max_backoff: Duration,
}

impl RetryBehavior {
    /// `max_attempts` attempts, starting at `initial_backoff` and growing by `base`, with the
    /// default jitter of 0.5 and delays capped at a day.
    pub fn new(max_attempts: u32, initial_backoff: Duration, base: f64) -> Self {
        Self {
            max_attempts,
            initial_backoff,
            base,
            jitter: 0.5,
            max_backoff: Duration::from_secs(24 * 60 * 60),
        }
    }

    /// The same behaviour with `jitter` instead.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// One attempt only.
    pub fn never() -> Self {
        Self::new(1, Duration::ZERO, 1.0).with_jitter(0.0)
    }

    /// The queue-level policy for a job with this behaviour. A job whose completion callback
    /// must run gets unlimited attempts at the queue level, so that only a pool member (which
    /// records the callback first) ever ends it; the pool counts its attempts itself.
    pub(crate) fn policy(&self, unlimited: bool) -> RetryPolicy {
        let initial = u64::try_from(self.initial_backoff.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.max_backoff.as_millis())
            .unwrap_or(u64::MAX)
            .max(initial);
        RetryPolicy {
            max_attempts: if unlimited {
                u32::MAX
            } else {
                self.max_attempts
            },
            initial_backoff_ms: initial,
            base: self.base,
            max_backoff_ms: max,
            jitter: self.jitter,
        }
    }
}

/// The completion callback of a job: a registered completion handler and a value handed to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnComplete {
    /// The name the handler was registered under with
    /// [`WorkPool::on_complete`](crate::WorkPool::on_complete).
    pub handler: String,
    /// Passed to the handler as [`Completion::context`](crate::Completion::context).
    pub context: Value,
}

/// When a job should first run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartAt {
    /// As soon as a slot is free.
    #[default]
    Now,
    /// This long after it is enqueued, by the backend's clock.
    After(Duration),
    /// At this wall-clock time, converted to a delay on the enqueuing host's clock.
    At(SystemTime),
}

impl StartAt {
    pub(crate) fn delay(self) -> Duration {
        match self {
            Self::Now => Duration::ZERO,
            Self::After(delay) => delay,
            Self::At(time) => time
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// A job's options, built with [`EnqueueOptions::new`] and its `with_*` methods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnqueueOptions {
    /// The retry behaviour; `None` takes the pool's default.
    pub retry: Option<RetryBehavior>,
    /// When the job first runs.
    pub start: StartAt,
    /// The completion callback, if any.
    pub on_complete: Option<OnComplete>,
    /// A name for logs.
    pub name: Option<String>,
}

impl EnqueueOptions {
    /// Runs at once, the pool's default retry behaviour, no callback, no name.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the retry behaviour.
    pub fn with_retry(mut self, retry: RetryBehavior) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Runs the job `delay` after it is enqueued.
    pub fn run_after(mut self, delay: Duration) -> Self {
        self.start = StartAt::After(delay);
        self
    }

    /// Runs the job at `time`.
    pub fn run_at(mut self, time: SystemTime) -> Self {
        self.start = StartAt::At(time);
        self
    }

    /// Calls the completion handler registered as `handler` with `context` once the job ends.
    pub fn on_complete(mut self, handler: impl Into<String>, context: Value) -> Self {
        self.on_complete = Some(OnComplete {
            handler: handler.into(),
            context,
        });
        self
    }

    /// Names the job in logs.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}
