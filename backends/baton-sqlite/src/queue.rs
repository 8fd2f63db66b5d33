//! [`Queue`] on SQLite: one short `BEGIN IMMEDIATE` transaction per call.
//!
//! Reservation reads the due jobs of each queue from the partial index over pending jobs
//! (`jobs_due`), merges them in priority order and reserves each with one `UPDATE … RETURNING`
//! that appends the attempt to the history in SQL. Completing, failing, canceling and
//! requeueing read the row, change the job as the memory backend does, and write it back in the
//! same transaction. Every change also writes an `events` row, and is announced to this
//! process's hub after the commit.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    AttemptOutcome, Error, Job, JobFilter, JobId, JobLease, JobPage, JobState, NewJob, Owner,
    Queue, QueueCounts, QueueName, Reserved, Result, Retry, Timestamp, check_json_size,
    truncate_error, validate_batch, validate_list, validate_queue_list, validate_reserve,
    validate_ttl,
};
use baton_sql::{JobRow, from_sqlx};
use serde_json::Value;

use crate::jobs::{Changes, end_attempt, finish, retry_or_fail};
use crate::{SqliteBackend, millis};

/// How many finished jobs one purge transaction deletes.
const PURGE_BATCH: i64 = 5_000;

#[async_trait]
impl Queue for SqliteBackend {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let mut changes = Changes::default();
        let mut write = self.write().await?;
        let id = self.insert(&mut write, job, &mut changes).await?;
        self.commit_and_announce(write, changes).await?;
        Ok(id)
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        validate_batch(jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut changes = Changes::default();
        let mut write = self.write().await?;
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            ids.push(self.insert(&mut write, job, &mut changes).await?);
        }
        self.commit_and_announce(write, changes).await?;
        Ok(ids)
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        validate_reserve(queues, max, lease_ttl)?;
        self.reserve_combined(queues, owner, lease_ttl, max).await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        validate_ttl(ttl)?;
        let expires_at: Option<i64> = sqlx::query_scalar(self.sql().touch_job.clone())
            .bind(millis(ttl))
            .bind(lease.job.get())
            .bind(lease.lease.owner().as_str().to_owned())
            .bind(i64::try_from(lease.lease.token().get()).unwrap_or(i64::MAX))
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?;
        let expires_at = expires_at.ok_or_else(|| lease.job.lease_lost())?;
        Ok(JobLease {
            job: lease.job,
            lease: baton_core::Lease::granted(
                lease.lease.owner().clone(),
                lease.lease.token(),
                Timestamp::from_millis(expires_at),
            ),
        })
    }

    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job> {
        check_json_size("result", &result)?;
        self.complete_combined(lease, result).await
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let error = truncate_error(error);
        let mut changes = Changes::default();
        let mut write = self.write().await?;
        let now = Timestamp::from_millis(write.now);
        let mut job = self.current(&mut write, lease).await?;
        let delay = job.retry_delay(retry);
        end_attempt(
            &mut job,
            AttemptOutcome::Failed {
                error: error.clone(),
            },
            now,
        );
        job.error = Some(error);
        retry_or_fail(&mut job, delay, now);
        self.store(&mut write, &job, &mut changes).await?;
        self.commit_and_announce(write, changes).await?;
        Ok(job)
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let mut changes = Changes::default();
        let mut write = self.write().await?;
        let now = Timestamp::from_millis(write.now);
        let mut job = self
            .load(&mut write, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        match job.state {
            JobState::Canceled => return Ok(job),
            JobState::Succeeded | JobState::Failed => {
                return Err(Error::conflict(format!("job {id} already {}", job.state)));
            }
            JobState::Pending => {}
            JobState::Running => end_attempt(&mut job, AttemptOutcome::Canceled, now),
        }
        finish(&mut job, JobState::Canceled, now);
        self.store(&mut write, &job, &mut changes).await?;
        self.commit_and_announce(write, changes).await?;
        Ok(job)
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        let mut changes = Changes::default();
        let mut write = self.write().await?;
        let now = Timestamp::from_millis(write.now);
        let mut job = self
            .load(&mut write, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        match job.state {
            JobState::Pending | JobState::Running => return Ok(job),
            JobState::Succeeded => {
                return Err(Error::conflict(format!("job {id} already succeeded")));
            }
            JobState::Failed | JobState::Canceled => {}
        }
        job.finished_at = None;
        retry_or_fail(&mut job, Some(Duration::ZERO), now);
        self.store(&mut write, &job, &mut changes).await?;
        self.commit_and_announce(write, changes).await?;
        Ok(job)
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        let mut write = self.write().await?;
        let now = write.now;
        sqlx::query(self.sql().pause_queue.clone())
            .bind(queue.as_str())
            .bind(now)
            .execute(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        self.commit_and_announce(write, Changes::default()).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        let mut write = self.write().await?;
        let resumed = sqlx::query(self.sql().resume_queue.clone())
            .bind(queue.as_str())
            .execute(&mut *write.tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
            > 0;
        self.commit_and_announce(write, Changes::default()).await?;
        if resumed {
            self.inner.hub.wake(queue);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        let names: Vec<String> = sqlx::query_scalar(self.sql().paused_queues.clone())
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        names.into_iter().map(QueueName::new).collect()
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        validate_queue_list(limit)?;
        let names: Vec<String> = sqlx::query_scalar(self.sql().queues.clone())
            .bind(after.map_or("", QueueName::as_str))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        names.into_iter().map(QueueName::new).collect()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        validate_list(filter)?;
        let sql = self.sql();
        let statement = match (filter.queue.is_some(), filter.state.is_some()) {
            (false, false) => &sql.list_all,
            (true, false) => &sql.list_queue,
            (false, true) => &sql.list_state,
            (true, true) => &sql.list_queue_state,
        };
        let mut query = sqlx::query_as::<_, JobRow>(statement.clone())
            .bind(filter.before.map_or(i64::MAX, JobId::get));
        if let Some(queue) = &filter.queue {
            query = query.bind(queue.as_str().to_owned());
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        let rows = query
            .bind(i64::try_from(filter.limit + 1).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        let jobs = rows
            .into_iter()
            .map(JobRow::into_job)
            .collect::<Result<Vec<_>>>()?;
        Ok(JobPage::from_newest(jobs, filter.limit))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        sqlx::query_as::<_, JobRow>(self.sql().job_by_id.clone())
            .bind(id.get())
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?
            .map(JobRow::into_job)
            .transpose()
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        sqlx::query_as::<_, JobRow>(self.sql().last_job.clone())
            .bind(queue.as_str().to_owned())
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?
            .map(JobRow::into_job)
            .transpose()
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as(self.sql().count_jobs.clone())
            .bind(queue.as_str().to_owned())
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        let mut counts = QueueCounts::default();
        for (state, count) in rows {
            let state: JobState = state.parse()?;
            *counts.get_mut(state) = u64::try_from(count).unwrap_or(0);
        }
        Ok(counts)
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        let mut changes = Changes::default();
        let mut write = self.write().await?;
        let now = Timestamp::from_millis(write.now);
        let rows: Vec<JobRow> = sqlx::query_as(self.sql().expired_jobs.clone())
            .bind(write.now)
            .fetch_all(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        let mut requeued = Vec::with_capacity(rows.len());
        for row in rows {
            let mut job = row.into_job()?;
            end_attempt(&mut job, AttemptOutcome::Expired, now);
            job.error = Some("lease expired".to_owned());
            let delay = job.retry_delay(Retry::ByPolicy);
            retry_or_fail(&mut job, delay, now);
            self.store(&mut write, &job, &mut changes).await?;
            requeued.push(job.id);
        }
        self.commit_and_announce(write, changes).await?;
        Ok(requeued)
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        // In batches, each its own short transaction, so that purging a million jobs never
        // holds the write lock long enough to time out another process's writer.
        let mut purged = 0;
        let mut cutoff = None;
        loop {
            let mut write = self.write().await?;
            let before = *cutoff.get_or_insert(write.now.saturating_sub(millis(older_than)));
            let deleted = sqlx::query(self.sql().purge_jobs.clone())
                .bind(before)
                .bind(PURGE_BATCH)
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            write.commit().await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                break;
            }
        }
        sqlx::query(self.sql().prune_events.clone())
            .bind(millis(crate::EVENT_RETENTION))
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
        Ok(purged)
    }
}
