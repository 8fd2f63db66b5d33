//! The job helpers behind [`Queue`](baton_core::Queue): what a transaction changed, how a
//! job row is read, checked, changed and written back, and which jobs are due.

use std::cmp::Reverse;
use std::time::Duration;

use baton_core::{
    AttemptOutcome, Job, JobEvent, JobId, JobLease, JobState, NewJob, QueueName, Result, Timestamp,
};
use baton_sql::{JobRow, encode_history, encode_json, encode_retry, from_sqlx};

use crate::{SqliteBackend, Write};

/// What a transaction changed, announced to this process once it commits.
#[derive(Default)]
pub(crate) struct Changes {
    pub(crate) events: Vec<JobEvent>,
    wake: Vec<QueueName>,
}

impl Changes {
    fn push(&mut self, job: &Job, now: Timestamp) {
        self.events.push(job.event());
        if job.state == JobState::Pending && job.run_at <= now && !self.wake.contains(&job.queue) {
            self.wake.push(job.queue.clone());
        }
    }
}

/// Ends the running attempt with `outcome`.
pub(crate) fn end_attempt(job: &mut Job, outcome: AttemptOutcome, now: Timestamp) {
    job.lease = None;
    if let Some(attempt) = job.history.last_mut()
        && attempt.outcome.is_none()
    {
        attempt.finished_at = Some(now);
        attempt.outcome = Some(outcome);
    }
}

pub(crate) fn finish(job: &mut Job, state: JobState, now: Timestamp) {
    job.state = state;
    job.finished_at = Some(now);
}

/// After a failed or expired attempt: back to pending after `delay`, or failed.
pub(crate) fn retry_or_fail(job: &mut Job, delay: Option<Duration>, now: Timestamp) {
    match delay {
        Some(delay) => {
            job.state = JobState::Pending;
            job.run_at = now.saturating_add(delay);
        }
        None => finish(job, JobState::Failed, now),
    }
}

impl SqliteBackend {
    /// Commits `write`, then publishes its changes to this process's subscribers and waiters
    /// before the next writer of this process can commit, so each job's events reach them in
    /// order.
    pub(crate) async fn commit_and_announce(
        &self,
        write: Write<'_>,
        changes: Changes,
    ) -> Result<()> {
        let Write { tx, turn, .. } = write;
        tx.commit().await.map_err(from_sqlx)?;
        for event in &changes.events {
            self.inner.hub.publish(event);
        }
        for queue in &changes.wake {
            self.inner.hub.wake(queue);
        }
        drop(turn);
        Ok(())
    }

    pub(crate) async fn load(&self, write: &mut Write<'_>, id: JobId) -> Result<Option<Job>> {
        sqlx::query_as::<_, JobRow>(self.sql().job_by_id.clone())
            .bind(id.get())
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(from_sqlx)?
            .map(JobRow::into_job)
            .transpose()
    }

    /// The running job `lease` holds, if the lease is current by the database's clock.
    pub(crate) async fn current(&self, write: &mut Write<'_>, lease: &JobLease) -> Result<Job> {
        let job = self
            .load(write, lease.job)
            .await?
            .ok_or_else(|| lease.job.lease_lost())?;
        let held = job.state == JobState::Running
            && job.lease.as_ref().is_some_and(|current| {
                current.token() == lease.lease.token()
                    && current.owner() == lease.lease.owner()
                    && current.expires_at().as_millis() > write.now
            });
        if held {
            Ok(job)
        } else {
            Err(lease.job.lease_lost())
        }
    }

    /// Writes back `job` and records its event.
    pub(crate) async fn store(
        &self,
        write: &mut Write<'_>,
        job: &Job,
        changes: &mut Changes,
    ) -> Result<()> {
        let lease = job.lease.as_ref();
        sqlx::query(self.sql().write_job.clone())
            .bind(job.state.as_str())
            .bind(i64::from(job.attempts))
            .bind(job.run_at.as_millis())
            .bind(job.finished_at.map(Timestamp::as_millis))
            .bind(job.result.as_ref().map(encode_json))
            .bind(job.error.clone())
            .bind(lease.map(|lease| lease.owner().as_str().to_owned()))
            .bind(lease.map(|lease| lease.expires_at().as_millis()))
            .bind(encode_history(&job.history))
            .bind(job.id.get())
            .execute(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        let event = job.event();
        self.record_event(write, &event).await?;
        changes.push(job, Timestamp::from_millis(write.now));
        Ok(())
    }

    pub(crate) async fn insert(
        &self,
        write: &mut Write<'_>,
        new: &NewJob,
        changes: &mut Changes,
    ) -> Result<JobId> {
        let now = Timestamp::from_millis(write.now);
        let run_at = now.saturating_add(new.delay());
        let id: i64 = sqlx::query_scalar(self.sql().insert_job.clone())
            .bind(new.queue().as_str().to_owned())
            .bind(encode_json(new.payload()))
            .bind(new.priority().0)
            .bind(encode_retry(new.retry()))
            .bind(now.as_millis())
            .bind(run_at.as_millis())
            .bind(new.trace_parent().map(|parent| parent.as_str().to_owned()))
            .fetch_one(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        let event = JobEvent {
            job: JobId::new(id),
            queue: new.queue().clone(),
            state: JobState::Pending,
            attempts: 0,
        };
        self.record_event(write, &event).await?;
        changes.events.push(event);
        if run_at <= now && !changes.wake.contains(new.queue()) {
            changes.wake.push(new.queue().clone());
        }
        Ok(JobId::new(id))
    }

    /// Due jobs of `queues` in reservation order, at most `max`.
    pub(crate) async fn due(
        &self,
        write: &mut Write<'_>,
        queues: &[QueueName],
        max: usize,
    ) -> Result<Vec<i64>> {
        let mut candidates: Vec<(Reverse<i32>, i64, i64)> = Vec::new();
        let mut seen: Vec<&QueueName> = Vec::new();
        for queue in queues {
            if seen.contains(&queue) {
                continue;
            }
            seen.push(queue);
            let rows: Vec<(i64, i32, i64)> = sqlx::query_as(self.sql().due_jobs.clone())
                .bind(queue.as_str().to_owned())
                .bind(write.now)
                .bind(i64::try_from(max).unwrap_or(i64::MAX))
                .fetch_all(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            candidates.extend(
                rows.into_iter()
                    .map(|(id, priority, run_at)| (Reverse(priority), run_at, id)),
            );
        }
        candidates.sort_unstable();
        candidates.truncate(max);
        Ok(candidates.into_iter().map(|(_, _, id)| id).collect())
    }
}
