//! Helpers shared by the cases: names, error checks, bounded waits and a seeded random source.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

use baton_core::{
    AttemptOutcome, Error, ItemId, Job, JobId, LockName, NewJob, Owner, PoolName, Queue, QueueName,
    Reserved, RetryPolicy,
};
use serde_json::Value;

/// A TTL that no case outlives, even with real time on a slow machine.
pub(super) const LONG_TTL: Duration = Duration::from_secs(60);
/// A TTL that cases let run out with [`PAST_SHORT_TTL`].
pub(super) const SHORT_TTL: Duration = Duration::from_millis(400);
/// Comfortably longer than [`SHORT_TTL`]: pass this much time to expire a short lease.
pub(super) const PAST_SHORT_TTL: Duration = Duration::from_millis(700);
/// How long a case waits for an event from another task before calling it lost.
pub(super) const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns `Err(message)` from the case unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}
pub(super) use ensure;

/// Turns a backend result or an option into a case error that says what was being done.
pub(super) trait Context<T> {
    /// The value, or an error message starting with `what`.
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|error| format!("{what}: {error}"))
    }
}

impl<T> Context<T> for Option<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.ok_or_else(|| format!("{what}: got nothing"))
    }
}

/// A queue name known to be valid.
pub(super) fn queue(name: &str) -> Result<QueueName, String> {
    QueueName::new(name).ctx("queue name")
}

/// An owner name known to be valid.
pub(super) fn owner(name: &str) -> Result<Owner, String> {
    Owner::new(name).ctx("owner name")
}

/// A lock name known to be valid.
pub(super) fn lock(name: &str) -> Result<LockName, String> {
    LockName::new(name).ctx("lock name")
}

/// Lock names known to be valid.
pub(super) fn locks(names: &[&str]) -> Result<Vec<LockName>, String> {
    names.iter().map(|name| lock(name)).collect()
}

/// A pool name known to be valid.
pub(super) fn pool(name: &str) -> Result<PoolName, String> {
    PoolName::new(name).ctx("pool name")
}

/// Item ids known to be valid.
pub(super) fn items(names: &[&str]) -> Result<Vec<ItemId>, String> {
    names
        .iter()
        .map(|name| ItemId::new(name).ctx("item id"))
        .collect()
}

/// A job for `queue` carrying `payload`, with the default policy.
pub(super) fn job(queue: &QueueName, payload: Value) -> Result<NewJob, String> {
    NewJob::new(queue.clone(), payload).ctx("new job")
}

/// A job for `queue` carrying `payload`, retried by `policy`.
pub(super) fn job_with_retry(
    queue: &QueueName,
    payload: Value,
    policy: RetryPolicy,
) -> Result<NewJob, String> {
    job(queue, payload)?.with_retry(policy).ctx("retry policy")
}

/// `attempts` attempts in all, each retry due at once.
pub(super) fn immediate_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::exponential(attempts, Duration::ZERO)
}

/// Reserves exactly one job from `queue`, failing the case if none or more come back.
pub(super) async fn reserve_one<B: Queue>(
    backend: &B,
    queue: &QueueName,
    owner: &Owner,
    ttl: Duration,
) -> Result<Reserved, String> {
    let mut reserved = backend
        .reserve(std::slice::from_ref(queue), owner, ttl, 1)
        .await
        .ctx("reserve")?;
    ensure!(
        reserved.len() == 1,
        "reserve from {queue} returned {} jobs, expected 1",
        reserved.len()
    );
    reserved.pop().ctx("reserved job")
}

/// Checks that nothing is due in `queue`.
pub(super) async fn expect_nothing_due<B: Queue>(
    backend: &B,
    queue: &QueueName,
    why: &str,
) -> Result<(), String> {
    let reserved = backend
        .reserve(
            std::slice::from_ref(queue),
            &owner("idle-checker")?,
            LONG_TTL,
            10,
        )
        .await
        .ctx("reserve")?;
    let ids: Vec<JobId> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(
        reserved.is_empty(),
        "{why}: reserve returned jobs {ids:?}, expected none"
    );
    Ok(())
}

/// Checks that the last attempt of `job` ended as `outcome`.
pub(super) fn expect_last_outcome(job: &Job, outcome: &AttemptOutcome) -> Result<(), String> {
    let attempt = job.history.last().ctx("last attempt")?;
    ensure!(
        attempt.outcome.as_ref() == Some(outcome) && attempt.finished_at.is_some(),
        "last attempt of job {} recorded as {attempt:?}, expected {outcome:?}",
        job.id
    );
    Ok(())
}

/// Checks that `result` failed with `LeaseLost`.
pub(super) fn expect_lease_lost<T: Debug>(
    result: Result<T, Error>,
    what: &str,
) -> Result<(), String> {
    match result {
        Err(Error::LeaseLost { .. }) => Ok(()),
        Err(other) => Err(format!("{what}: expected LeaseLost, got error {other:?}")),
        Ok(value) => Err(format!("{what}: expected LeaseLost, got success {value:?}")),
    }
}

/// Checks that `result` failed with `InvalidInput`.
pub(super) fn expect_invalid<T: Debug>(result: Result<T, Error>, what: &str) -> Result<(), String> {
    match result {
        Err(Error::InvalidInput(_)) => Ok(()),
        Err(other) => Err(format!(
            "{what}: expected InvalidInput, got error {other:?}"
        )),
        Ok(value) => Err(format!(
            "{what}: expected InvalidInput, got success {value:?}"
        )),
    }
}

/// Checks that `result` failed with `NotFound`.
pub(super) fn expect_not_found<T: Debug>(
    result: Result<T, Error>,
    what: &str,
) -> Result<(), String> {
    match result {
        Err(Error::NotFound { .. }) => Ok(()),
        Err(other) => Err(format!("{what}: expected NotFound, got error {other:?}")),
        Ok(value) => Err(format!("{what}: expected NotFound, got success {value:?}")),
    }
}

/// Checks that `result` failed with `Conflict`.
pub(super) fn expect_conflict<T: Debug>(
    result: Result<T, Error>,
    what: &str,
) -> Result<(), String> {
    match result {
        Err(Error::Conflict(_)) => Ok(()),
        Err(other) => Err(format!("{what}: expected Conflict, got error {other:?}")),
        Ok(value) => Err(format!("{what}: expected Conflict, got success {value:?}")),
    }
}

/// Waits for `future` up to [`EVENT_TIMEOUT`].
pub(super) async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(EVENT_TIMEOUT, future)
        .await
        .map_err(|_| format!("{what}: nothing within {}s", EVENT_TIMEOUT.as_secs()))
}

/// Lets spawned tasks run until they block, without letting time pass.
pub(super) async fn let_others_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Waits for every task of `tasks` and returns the first failure, if any.
pub(super) async fn join_all(
    mut tasks: tokio::task::JoinSet<Result<(), String>>,
) -> Result<(), String> {
    let mut first_failure = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(join_error) => Err(join_error_message(join_error)),
        };
        if let (Err(message), None) = (outcome, &first_failure) {
            first_failure = Some(message);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// Says why a task did not finish: its panic message, or that it was cancelled.
pub(super) fn join_error_message(join_error: tokio::task::JoinError) -> String {
    match join_error.try_into_panic() {
        Ok(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
            format!("panicked: {message}")
        }
        Err(join_error) => format!("task did not finish: {join_error}"),
    }
}

/// A small seeded random source (xorshift64*), so that random runs can be replayed.
pub(super) struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next random number.
    pub(super) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`; `bound` must not be 0.
    pub(super) fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }
}
