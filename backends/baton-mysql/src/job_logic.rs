//! What happens to a job at each step, decided in Rust exactly as the memory backend does,
//! on a job read under its row lock.

use std::time::Duration;

use baton_core::{AttemptOutcome, Job, JobEvent, JobLease, JobState, NewJob, QueueName, Timestamp};

use crate::jobs::{INSERT_CHUNK, INSERT_CHUNK_BYTES};

/// `jobs` cut into the slices one insert statement carries: single rows when the server may
/// hand a multi-row insert non-consecutive ids, else up to [`INSERT_CHUNK`] rows and about
/// [`INSERT_CHUNK_BYTES`] of payload.
pub(crate) fn insert_chunks(jobs: &[NewJob], consecutive_ids: bool) -> Vec<&[NewJob]> {
    if !consecutive_ids {
        return jobs.chunks(1).collect();
    }
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, job) in jobs.iter().enumerate() {
        let size = job.payload().to_string().len();
        if index > start && (index - start >= INSERT_CHUNK || bytes + size > INSERT_CHUNK_BYTES) {
            chunks.push(&jobs[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < jobs.len() {
        chunks.push(&jobs[start..]);
    }
    chunks
}

/// What a committed change tells this process's waiters: events, and queues to wake.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) events: Vec<JobEvent>,
    pub(crate) wake: Vec<QueueName>,
}

impl Outbox {
    pub(crate) fn push(&mut self, job: &Job, now: i64) {
        self.events.push(job.event());
        if job.state == JobState::Pending && job.run_at.as_millis() <= now {
            self.wake.push(job.queue.clone());
        }
    }
}

pub(crate) fn attempts_i32(attempts: u32) -> i32 {
    i32::try_from(attempts).unwrap_or(i32::MAX)
}

/// Whether `lease` is the current, unexpired reservation of `job`.
pub(crate) fn is_current(job: &Job, lease: &JobLease, now: i64) -> bool {
    job.state == JobState::Running
        && job.lease.as_ref().is_some_and(|current| {
            current.token() == lease.lease.token()
                && current.owner() == lease.lease.owner()
                && current.expires_at().as_millis() > now
        })
}

/// Ends the running attempt with `outcome` and drops the lease.
pub(crate) fn end_attempt(job: &mut Job, outcome: AttemptOutcome, now: i64) {
    job.lease = None;
    if let Some(attempt) = job.history.last_mut()
        && attempt.outcome.is_none()
    {
        attempt.finished_at = Some(Timestamp::from_millis(now));
        attempt.outcome = Some(outcome);
    }
}

pub(crate) fn finish(job: &mut Job, state: JobState, now: i64) {
    job.state = state;
    job.lease = None;
    job.finished_at = Some(Timestamp::from_millis(now));
}

/// After a failed or expired attempt: back to pending after `delay`, or failed.
pub(crate) fn retry_or_fail(job: &mut Job, delay: Option<Duration>, now: i64) {
    match delay {
        None => finish(job, JobState::Failed, now),
        Some(delay) => {
            job.state = JobState::Pending;
            job.lease = None;
            job.run_at = Timestamp::from_millis(now).saturating_add(delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use baton_core::{NewJob, QueueName};

    use super::*;

    fn jobs(n: usize, payload_bytes: usize) -> Vec<NewJob> {
        let queue = QueueName::new("q").unwrap();
        let payload = serde_json::Value::String("x".repeat(payload_bytes));
        (0..n)
            .map(|_| NewJob::new(queue.clone(), payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn inserts_are_cut_by_rows_and_by_payload_bytes() {
        let many = jobs(2_500, 1);
        let lengths: Vec<usize> = insert_chunks(&many, true).iter().map(|c| c.len()).collect();
        assert_eq!(lengths, [1000, 1000, 500]);
        let big = jobs(10, 1024 * 1024 - 2);
        let lengths: Vec<usize> = insert_chunks(&big, true).iter().map(|c| c.len()).collect();
        assert_eq!(lengths, [4, 4, 2]);
    }

    #[test]
    fn without_consecutive_ids_every_job_is_its_own_insert() {
        let few = jobs(3, 1);
        assert!(insert_chunks(&few, false).iter().all(|c| c.len() == 1));
        assert_eq!(insert_chunks(&few, false).len(), 3);
    }
}
