//! The jobs this process reserved and has not finished, as their reservation returned them.
//!
//! A completion must return the finished job. While a job runs nothing about it changes but
//! its lease (renewals extend the expiry, never the token), so when this process holds the copy
//! its reservation returned under the same token, the completion script only checks the lease,
//! records the outcome and answers when it did; the finished job is that copy, finished
//! ([`finish`]). This spares the script reading and returning every field of the job, which is
//! most of its work. Without a copy (another process reserved the job, or the memo is full) the
//! script reads the job back as before.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use baton_core::{AttemptOutcome, FencingToken, Job, JobId, JobState, Timestamp};
use serde_json::Value;

/// The most jobs remembered; past it, completions read their job back.
pub(crate) const CAPACITY: usize = 65_536;

/// How long after its lease expired a job is forgotten to make room: its worker is gone, or
/// its completion will be refused anyway.
const FORGET_AFTER_MS: i64 = 60_000;

/// Reserved jobs by id, with the token of their reservation.
#[derive(Debug, Default)]
pub(crate) struct Running {
    jobs: Mutex<HashMap<JobId, Job>>,
}

impl Running {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers jobs just reserved (they carry their lease).
    pub(crate) fn remember(&self, reserved: &[Job]) {
        let mut jobs = self.jobs();
        if jobs.len() + reserved.len() > CAPACITY {
            let horizon = Timestamp::from_system_time(SystemTime::now())
                .saturating_sub(std::time::Duration::from_millis(FORGET_AFTER_MS as u64));
            jobs.retain(|_, job| job.lease.as_ref().is_some_and(|l| l.expires_at() > horizon));
        }
        for job in reserved {
            if jobs.len() >= CAPACITY {
                break;
            }
            jobs.insert(job.id, job.clone());
        }
    }

    /// Whether the job reserved under `token` is remembered.
    pub(crate) fn holds(&self, id: JobId, token: FencingToken) -> bool {
        self.jobs()
            .get(&id)
            .and_then(|job| job.lease.as_ref())
            .is_some_and(|lease| lease.token() == token)
    }

    /// Forgets a job, returning the copy if it was reserved under `token`.
    pub(crate) fn take(&self, id: JobId, token: FencingToken) -> Option<Job> {
        let job = self.jobs().remove(&id)?;
        job.lease
            .as_ref()
            .is_some_and(|lease| lease.token() == token)
            .then_some(job)
    }
}

/// The running `job` as its successful completion at `at` with `result` leaves it: what reading
/// it back would return.
pub(crate) fn finish(mut job: Job, result: Value, at: Timestamp) -> Job {
    job.state = JobState::Succeeded;
    job.lease = None;
    job.finished_at = Some(at);
    job.result = Some(result);
    if let Some(attempt) = job.history.last_mut()
        && attempt.number == job.attempts
        && attempt.finished_at.is_none()
    {
        attempt.finished_at = Some(at);
        attempt.outcome = Some(AttemptOutcome::Succeeded);
    }
    job
}
