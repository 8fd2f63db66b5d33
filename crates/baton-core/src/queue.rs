//! The [`Queue`] trait: durable jobs with leases, retries and cancellation.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{
    Error, Job, JobId, JobLease, JobState, NewJob, Owner, QueueCounts, QueueName, Reserved, Result,
    Retry, validate_ttl,
};

/// The most jobs one [`Queue::reserve`] call may ask for.
pub const MAX_RESERVE: usize = 1000;
/// The most jobs one [`Queue::enqueue_batch`] call may carry.
pub const MAX_BATCH: usize = 10_000;
/// The most jobs one [`Queue::list`] call returns.
pub const MAX_LIST: usize = 500;
/// The most queue names one [`Queue::queues`] call returns.
pub const MAX_QUEUE_LIST: usize = 1000;

/// Which jobs [`Queue::list`] returns: those matching every field given, newest (highest id)
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this queue's jobs.
    pub queue: Option<QueueName>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs older than this one (ids below it): the `next` of the page before.
    pub before: Option<JobId>,
    /// The most jobs to return, 1 to [`MAX_LIST`].
    pub limit: usize,
}

/// A page of [`Queue::list`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobPage {
    /// The matching jobs, newest first.
    pub jobs: Vec<Job>,
    /// Where the next page starts (its `before`), or `None` when no older job is left to look
    /// at. A page may hold fewer jobs than asked for, even none, while `next` is set: a backend
    /// may bound the work of one call.
    pub next: Option<JobId>,
}

impl JobPage {
    /// The page of at most `limit` jobs from `jobs`, matches taken newest first up to
    /// `limit + 1`: the extra one, if any, says that an older match is left.
    #[must_use]
    pub fn from_newest(mut jobs: Vec<Job>, limit: usize) -> Self {
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|job| job.id)
        } else {
            None
        };
        Self { jobs, next }
    }
}

/// Checks a [`JobFilter`]'s limit.
///
/// # Errors
///
/// `InvalidInput` for a limit of 0 or above [`MAX_LIST`].
pub fn validate_list(filter: &JobFilter) -> Result<()> {
    if filter.limit == 0 || filter.limit > MAX_LIST {
        return Err(Error::invalid(format!(
            "a list returns 1 to {MAX_LIST} jobs, not {}",
            filter.limit
        )));
    }
    Ok(())
}

/// Checks the `limit` of a [`Queue::queues`] call: 1 to [`MAX_QUEUE_LIST`].
///
/// # Errors
///
/// `InvalidInput` for a limit of 0 or above [`MAX_QUEUE_LIST`].
pub fn validate_queue_list(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_QUEUE_LIST {
        return Err(Error::invalid(format!(
            "a queue list returns 1 to {MAX_QUEUE_LIST} names, not {limit}"
        )));
    }
    Ok(())
}

/// The longest error message kept for a failed attempt, in bytes; a longer one is cut at a
/// character boundary and marked with `…`.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Checks the arguments of [`Queue::reserve`]: at least one queue, `max` from 1 to
/// [`MAX_RESERVE`], a TTL within bounds.
///
/// # Errors
///
/// `InvalidInput` saying which argument is wrong.
pub fn validate_reserve(queues: &[QueueName], max: usize, lease_ttl: Duration) -> Result<()> {
    if queues.is_empty() {
        return Err(Error::invalid("reserve needs at least one queue"));
    }
    if max == 0 || max > MAX_RESERVE {
        return Err(Error::invalid(format!(
            "reserve takes from 1 to {MAX_RESERVE} jobs, not {max}"
        )));
    }
    validate_ttl(lease_ttl)
}

/// Checks the size of an [`Queue::enqueue_batch`]: at most [`MAX_BATCH`] jobs.
///
/// # Errors
///
/// `InvalidInput` for a larger batch.
pub fn validate_batch(jobs: &[NewJob]) -> Result<()> {
    if jobs.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch may hold at most {MAX_BATCH} jobs, not {}",
            jobs.len()
        )));
    }
    Ok(())
}

/// `error` cut to at most [`MAX_ERROR_BYTES`] at a character boundary, marked with `…` when cut.
pub fn truncate_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

/// Durable jobs: enqueued, reserved by workers under a lease, and ended in exactly one terminal
/// state.
///
/// To ensure correctness, an implementation must:
/// - keep every enqueued job until it is terminal and then for as long as the caller's retention
///   asks ([`purge_finished`](Queue::purge_finished)); no job is lost;
/// - hand a due job to one worker at a time: [`reserve`](Queue::reserve) takes jobs whose
///   `run_at` has come, highest priority first, then earliest `run_at`, then lowest id, counts
///   the attempt, and grants a lease whose token is greater than every earlier token of that job;
/// - refuse `touch`, `complete` and `fail` with [`LeaseLost`](crate::Error::LeaseLost) when the
///   lease is not the job's current one (judged by job, owner and token against the backend's
///   record, never by the expiry in the caller's copy), has expired by the backend's clock, or
///   the job was canceled;
/// - record every attempt in the job's history with its outcome;
/// - when it also implements [`Dispatch`](crate::Dispatch), publish every state change of every
///   job and wake the queue when a job becomes due by `enqueue`, without being asked.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores a job, pending; returns its id.
    ///
    /// # Errors
    ///
    /// `Backend` if it could not be stored durably; then it may or may not have been stored.
    async fn enqueue(&self, job: &NewJob) -> Result<JobId>;

    /// Stores jobs in one step, all or none; returns their ids in order (none for no jobs).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for more than [`MAX_BATCH`] jobs; `Backend` as for `enqueue`.
    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>>;

    /// Reserves up to `max` due jobs from `queues` for `owner`, each under a lease of
    /// `lease_ttl`. Returns at once, with no jobs if none is due.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for no queues, `max` of 0 or above [`MAX_RESERVE`], or a bad TTL.
    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>>;

    /// Extends a running job's lease to `ttl` from now.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if the lease is not current.
    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease>;

    /// Ends a running job as succeeded with `result`.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if the lease is not current (a canceled job's completion is refused);
    /// `InvalidInput` for a result larger than [`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES).
    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job>;

    /// Completes `lease`'s job with `result`, as [`complete`](Queue::complete) does, and
    /// reserves up to `max` jobs of `queues` for `owner`, as [`reserve`](Queue::reserve) does:
    /// a worker's next step after finishing a job, which a backend may take in one round trip.
    /// The reservation is made whether or not the completion succeeds.
    ///
    /// # Errors
    ///
    /// As for [`reserve`](Queue::reserve); the completion's own outcome is the first value.
    async fn complete_and_reserve(
        &self,
        lease: &JobLease,
        result: Value,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<(Result<Job>, Vec<Reserved>)> {
        let completed = self.complete(lease, result).await;
        let reserved = self.reserve(queues, owner, lease_ttl, max).await?;
        Ok((completed, reserved))
    }

    /// Records a failed attempt with `error` (cut to [`MAX_ERROR_BYTES`]); the job goes back to pending at its retry time,
    /// or ends as failed when `retry` or its policy allows no more attempts.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if the lease is not current.
    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job>;

    /// Cancels a job: a pending one never starts, a running one's lease is revoked so its
    /// completion is refused, and no retry follows. Canceling a canceled job returns it as it is.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown job; `Conflict` for a job that already succeeded or failed.
    async fn cancel(&self, id: JobId) -> Result<Job>;

    /// Runs a failed or canceled job again: it becomes pending and due now, keeping its
    /// attempts, history and last error, and its retry policy applies again with at least one
    /// more attempt allowed (an attempt that fails once the policy's attempts are used up fails
    /// the job for good). Retrying a pending or running job returns it as it is.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown job; `Conflict` for a job that succeeded.
    async fn retry(&self, id: JobId) -> Result<Job>;

    /// The job with `id`, if it exists (not purged).
    async fn get(&self, id: JobId) -> Result<Option<Job>>;

    /// Jobs matching `filter`, newest first, a page at a time (see [`JobPage`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a limit out of bounds (see [`validate_list`]).
    async fn list(&self, filter: &JobFilter) -> Result<JobPage>;

    /// The most recently enqueued job of `queue` that still exists.
    async fn last(&self, queue: &QueueName) -> Result<Option<Job>>;

    /// How many jobs of `queue` are in each state.
    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts>;

    /// Pauses `queue`: none of its jobs is reserved until it is resumed. Enqueueing goes on and
    /// running jobs finish. A reservation already under way when the pause is stored may still
    /// take jobs. Pausing a paused queue changes nothing.
    async fn pause(&self, queue: &QueueName) -> Result<()>;

    /// Resumes a paused queue and wakes the workers waiting for it. Resuming a queue that is
    /// not paused changes nothing.
    async fn resume(&self, queue: &QueueName) -> Result<()>;

    /// The paused queues, in name order.
    async fn paused(&self) -> Result<Vec<QueueName>>;

    /// Every queue that holds a job (in any state) or is paused, by name, at most `limit` of them
    /// after `after` (exclusive) — so a caller can page through many queues. A queue whose jobs
    /// were all purged may still be listed.
    ///
    /// Names are in byte order ([`QueueName`]'s `Ord`), without repeats.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a `limit` of 0 or above [`MAX_QUEUE_LIST`] (see
    /// [`validate_queue_list`]).
    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>>;

    /// Ends every attempt whose lease expired as [`Expired`](crate::AttemptOutcome::Expired) and
    /// retries or fails its job by its policy, exactly once; returns the jobs it touched.
    async fn requeue_expired(&self) -> Result<Vec<JobId>>;

    /// Deletes jobs that reached a terminal state more than `older_than` ago; returns how many.
    async fn purge_finished(&self, older_than: Duration) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_error_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate_error(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_error("short"), "short");
    }

    #[test]
    fn reserve_arguments_are_checked() {
        let queue = QueueName::new("q").unwrap();
        let ttl = Duration::from_secs(1);
        assert!(validate_reserve(std::slice::from_ref(&queue), 1, ttl).is_ok());
        assert!(validate_reserve(&[], 1, ttl).is_err());
        assert!(validate_reserve(std::slice::from_ref(&queue), 0, ttl).is_err());
        assert!(validate_reserve(std::slice::from_ref(&queue), MAX_RESERVE + 1, ttl).is_err());
        assert!(validate_reserve(std::slice::from_ref(&queue), 1, Duration::ZERO).is_err());
    }

    #[test]
    fn queue_list_limit_is_checked() {
        assert!(validate_queue_list(1).is_ok());
        assert!(validate_queue_list(MAX_QUEUE_LIST).is_ok());
        assert!(validate_queue_list(0).is_err());
        assert!(validate_queue_list(MAX_QUEUE_LIST + 1).is_err());
    }
}
