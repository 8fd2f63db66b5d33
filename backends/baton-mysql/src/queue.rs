//! [`Queue`] on MySQL: argument checks, the retry of transactions that lost a deadlock, and
//! delivery to this process's waiters after commit; the transactions are in `jobs.rs`.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    AttemptOutcome, Error, Job, JobFilter, JobId, JobLease, JobPage, JobState, Lease, NewJob,
    Owner, Queue, QueueCounts, QueueName, Reserved, Result, Retry, Timestamp, check_json_size,
    truncate_error, validate_batch, validate_list, validate_queue_list, validate_reserve,
    validate_ttl,
};
use baton_sql::{JobRow, from_sqlx};
use serde_json::Value;
use sqlx::Row;

use crate::MysqlStore;
use crate::sql::{TxError, millis, now, retrying};

use crate::job_logic::{end_attempt, retry_or_fail};
use crate::jobs::{
    COUNTS, LIST, PAUSE_QUEUE, PAUSED_QUEUES, PURGE, QUEUES, RESUME_QUEUE, SELECT_JOB, SELECT_LAST,
};

#[async_trait]
impl Queue for MysqlStore {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let (ids, outbox) = retrying(|| self.enqueue_once(std::slice::from_ref(job))).await?;
        self.deliver(&outbox);
        ids.first()
            .copied()
            .ok_or_else(|| Error::permanent(std::io::Error::other("insert returned no id")))
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        validate_batch(jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, outbox) = retrying(|| self.enqueue_once(jobs)).await?;
        self.deliver(&outbox);
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
        let mut queues = queues.to_vec();
        queues.sort();
        queues.dedup();
        self.reserve_combined(queues, owner, lease_ttl, max).await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        validate_ttl(ttl)?;
        let (job, _) = retrying(|| {
            self.change_leased(lease, |job, now| {
                job.lease = Some(Lease::granted(
                    lease.lease.owner().clone(),
                    lease.lease.token(),
                    Timestamp::from_millis(now).saturating_add(ttl),
                ));
            })
        })
        .await?;
        let renewed = job.lease.ok_or_else(|| lease.job.lease_lost())?;
        Ok(JobLease {
            job: lease.job,
            lease: renewed,
        })
    }

    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job> {
        check_json_size("result", &result)?;
        self.complete_combined(lease, result).await
    }

    /// The completion and the reservation join their shared transactions at the same time,
    /// instead of one after the other.
    async fn complete_and_reserve(
        &self,
        lease: &JobLease,
        result: Value,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<(Result<Job>, Vec<Reserved>)> {
        let (completed, reserved) = tokio::join!(
            self.complete(lease, result),
            self.reserve(queues, owner, lease_ttl, max)
        );
        Ok((completed, reserved?))
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let error = truncate_error(error);
        let (job, outbox) = retrying(|| {
            self.change_leased(lease, |job, now| {
                let delay = job.retry_delay(retry);
                end_attempt(
                    job,
                    AttemptOutcome::Failed {
                        error: error.clone(),
                    },
                    now,
                );
                job.error = Some(error.clone());
                retry_or_fail(job, delay, now);
            })
        })
        .await?;
        self.deliver(&outbox);
        Ok(job)
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let (job, outbox) = retrying(|| self.cancel_once(id)).await?;
        self.deliver(&outbox);
        Ok(job)
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        let (job, outbox) = retrying(|| self.retry_once(id)).await?;
        self.deliver(&outbox);
        Ok(job)
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        sqlx::query(self.stmt(PAUSE_QUEUE))
            .bind(queue.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        let resumed = sqlx::query(self.stmt(RESUME_QUEUE))
            .bind(queue.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(from_sqlx)?
            .rows_affected()
            > 0;
        if resumed {
            self.inner.hub.wake(queue);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        let names: Vec<String> = sqlx::query_scalar(self.stmt(PAUSED_QUEUES))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        names.into_iter().map(QueueName::new).collect()
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        validate_queue_list(limit)?;
        let after = after.map_or("", QueueName::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let names: Vec<String> = sqlx::query_scalar(self.stmt(QUEUES))
            .bind(after)
            .bind(limit)
            .bind(after)
            .bind(limit)
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        names.into_iter().map(QueueName::new).collect()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        validate_list(filter)?;
        let statement =
            LIST[usize::from(filter.queue.is_some()) | usize::from(filter.state.is_some()) << 1];
        let mut query = sqlx::query_as::<_, JobRow>(self.stmt(statement))
            .bind(filter.before.map_or(i64::MAX, JobId::get));
        if let Some(queue) = &filter.queue {
            query = query.bind(queue.as_str());
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        let rows = query
            .bind(i64::try_from(filter.limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        let jobs = rows
            .into_iter()
            .map(JobRow::into_job)
            .collect::<Result<Vec<_>>>()?;
        Ok(JobPage::from_newest(jobs, filter.limit))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(self.stmt(SELECT_JOB))
            .bind(id.get())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        row.map(JobRow::into_job).transpose()
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(self.stmt(SELECT_LAST))
            .bind(queue.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        row.map(JobRow::into_job).transpose()
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let rows = sqlx::query(self.stmt(COUNTS))
            .bind(queue.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        let mut counts = QueueCounts::default();
        for row in rows {
            let state: String = row.try_get(0).map_err(from_sqlx)?;
            let count: i64 = row.try_get(1).map_err(from_sqlx)?;
            let state: JobState = state.parse()?;
            *counts.get_mut(state) = u64::try_from(count).unwrap_or(0);
        }
        Ok(counts)
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        let mut all = Vec::new();
        loop {
            let (ids, outbox) = retrying(|| self.requeue_once()).await?;
            self.deliver(&outbox);
            let done = ids.len() < 500;
            all.extend(ids);
            if done {
                return Ok(all);
            }
        }
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        let now = {
            let mut conn = self.inner.pool.acquire().await.map_err(from_sqlx)?;
            now(&mut conn).await.map_err(|error| match error {
                TxError::Sql(error) => from_sqlx(error),
                TxError::Baton(error) => error,
            })?
        };
        let cutoff = now.saturating_sub(millis(older_than));
        let mut purged = 0;
        loop {
            let done = sqlx::query(self.stmt(PURGE))
                .bind(cutoff)
                .execute(&self.inner.pool)
                .await
                .map_err(from_sqlx)?;
            purged += done.rows_affected();
            if done.rows_affected() < 10_000 {
                return Ok(purged);
            }
        }
    }
}
