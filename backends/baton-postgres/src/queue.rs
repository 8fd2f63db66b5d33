//! [`Queue`] on PostgreSQL: one statement per grant or completion, `SKIP LOCKED` reservation,
//! read-modify-write in one transaction where the retry policy decides (fail, expiry).

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    AttemptOutcome, Error, Job, JobEvent, JobFilter, JobId, JobLease, JobPage, JobState, NewJob,
    Owner, Queue, QueueCounts, QueueName, Reserved, Result, Retry, Timestamp, TraceParent,
    check_json_size, truncate_error, validate_batch, validate_list, validate_queue_list,
    validate_reserve, validate_ttl,
};
use baton_sql::{JobRow, encode_json, encode_retry, from_sqlx};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use tokio::sync::oneshot;

use crate::batch::{CompleteRequest, EnqueueRequest, ReserveRequest, Shared};
use crate::{PostgresBackend, batcher_gone, millis};

/// The most expired jobs one transaction of `requeue_expired` handles (the `LIMIT` of
/// `select_expired`).
const REQUEUE_BATCH: usize = 1000;
/// How many finished jobs one purge transaction deletes.
const PURGE_BATCH: i64 = 5_000;

/// Inserts `jobs` in one statement (with their `NOTIFY`s); returns their ids in order.
pub(crate) async fn insert_jobs(shared: &Shared, jobs: &[&NewJob]) -> Result<Vec<i64>> {
    let queues: Vec<&str> = jobs.iter().map(|job| job.queue().as_str()).collect();
    let payloads: Vec<String> = jobs.iter().map(|job| encode_json(job.payload())).collect();
    let priorities: Vec<i32> = jobs.iter().map(|job| job.priority().0).collect();
    let retries: Vec<String> = jobs.iter().map(|job| encode_retry(job.retry())).collect();
    let delays: Vec<i64> = jobs.iter().map(|job| millis(job.delay())).collect();
    let trace_parents: Vec<Option<&str>> = jobs
        .iter()
        .map(|job| job.trace_parent().map(TraceParent::as_str))
        .collect();
    let rows = sqlx::query(shared.sql.enqueue.clone())
        .bind(&queues)
        .bind(&payloads)
        .bind(&priorities)
        .bind(&retries)
        .bind(&delays)
        .bind(&trace_parents)
        .bind(shared.origin)
        .fetch_all(&shared.pool)
        .await
        .map_err(from_sqlx)?;
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|row| row.try_get::<i64, _>("id"))
        .collect::<std::result::Result<_, _>>()
        .map_err(from_sqlx)?;
    // Ids are assigned in the statement's order, so sorted ids line up with `jobs`.
    ids.sort_unstable();
    if ids.len() != jobs.len() {
        return Err(Error::permanent(std::io::Error::other(format!(
            "inserted {} jobs but got {} ids",
            jobs.len(),
            ids.len()
        ))));
    }
    Ok(ids)
}

/// A row of `{cols}` as a job.
pub(crate) fn decode_job(row: &PgRow) -> Result<Job> {
    JobRow::from_row(row).map_err(from_sqlx)?.into_job()
}

fn outcome_json(outcome: &AttemptOutcome) -> String {
    serde_json::to_string(outcome).unwrap_or_else(|_| "{}".to_owned())
}

fn token(lease: &JobLease) -> i64 {
    i64::try_from(lease.lease.token().get()).unwrap_or(i64::MAX)
}

impl PostgresBackend {
    /// Publishes a committed job change to this process's subscribers, and wakes its queue if
    /// it became due.
    fn deliver(&self, job: &Job, now_due: bool) {
        self.inner.hub.publish(&job.event());
        if now_due {
            self.inner.hub.wake(&job.queue);
        }
    }

    /// Requeues or fails up to [`REQUEUE_BATCH`] expired jobs in one transaction; says whether
    /// more may be left.
    async fn requeue_expired_batch(&self) -> Result<(Vec<JobId>, bool)> {
        let mut tx = baton_sql::begin(&self.inner.shared.pool, None).await?;
        let rows = sqlx::query(self.inner.shared.sql.select_expired.clone())
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let mut changed = Vec::with_capacity(rows.len());
        for row in &rows {
            let current = decode_job(row)?;
            let delay = current.retry_delay(Retry::ByPolicy);
            let job = self
                .end_attempt(
                    &mut tx,
                    &current,
                    delay,
                    "lease expired",
                    &AttemptOutcome::Expired,
                )
                .await?;
            changed.push((job, delay.is_some_and(|delay| delay.is_zero())));
        }
        tx.commit().await.map_err(from_sqlx)?;
        let ids = changed
            .into_iter()
            .map(|(job, due)| {
                self.deliver(&job, due);
                job.id
            })
            .collect();
        Ok((ids, rows.len() >= REQUEUE_BATCH))
    }

    /// Ends the current attempt of the locked, running `job` and retries it after `delay` or
    /// fails it; inside `tx`.
    async fn end_attempt(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &Job,
        delay: Option<Duration>,
        error: &str,
        outcome: &AttemptOutcome,
    ) -> Result<Job> {
        let delay_ms = delay.map_or(-1, millis);
        let row = sqlx::query(self.inner.shared.sql.end_attempt.clone())
            .bind(job.id.get())
            .bind(delay_ms)
            .bind(error)
            .bind(outcome_json(outcome))
            .bind(self.inner.shared.origin)
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        decode_job(&row)
    }
}

impl PostgresBackend {
    /// Hands a reservation to its batching task; the answer comes through [`Self::reserved`].
    fn send_reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<oneshot::Receiver<Result<Vec<Job>>>> {
        validate_reserve(queues, max, lease_ttl)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .batchers
            .reserve
            .send(ReserveRequest {
                queues: queues.to_vec(),
                owner: owner.as_str().to_owned(),
                ttl_ms: millis(lease_ttl),
                max,
                reply,
            })
            .map_err(|_| batcher_gone())?;
        Ok(answer)
    }

    /// The jobs a reservation sent by [`Self::send_reserve`] got, in reservation order.
    async fn reserved(&self, answer: oneshot::Receiver<Result<Vec<Job>>>) -> Result<Vec<Reserved>> {
        let mut jobs = answer.await.map_err(|_| batcher_gone())??;
        jobs.sort_by_key(|job| (std::cmp::Reverse(job.priority), job.run_at, job.id));
        let mut reserved = Vec::with_capacity(jobs.len());
        for job in jobs {
            self.deliver(&job, false);
            let Some(lease) = job.lease.clone() else {
                return Err(Error::permanent(std::io::Error::other(format!(
                    "reserved job {} has no lease",
                    job.id
                ))));
            };
            reserved.push(Reserved {
                lease: JobLease { job: job.id, lease },
                job,
            });
        }
        Ok(reserved)
    }

    /// Hands a completion to its batching task; the answer comes through [`Self::completed`].
    fn send_complete(
        &self,
        lease: &JobLease,
        result: Value,
    ) -> Result<oneshot::Receiver<Result<Option<Job>>>> {
        check_json_size("result", &result)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .batchers
            .complete
            .send(CompleteRequest {
                id: lease.job.get(),
                owner: lease.lease.owner().as_str().to_owned(),
                token: token(lease),
                result: encode_json(&result),
                reply,
            })
            .map_err(|_| batcher_gone())?;
        Ok(answer)
    }

    /// The job a completion sent by [`Self::send_complete`] finished.
    async fn completed(
        &self,
        lease: &JobLease,
        answer: oneshot::Receiver<Result<Option<Job>>>,
    ) -> Result<Job> {
        let job = answer
            .await
            .map_err(|_| batcher_gone())??
            .ok_or_else(|| lease.job.lease_lost())?;
        self.deliver(&job, false);
        Ok(job)
    }
}

#[async_trait]
impl Queue for PostgresBackend {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .batchers
            .enqueue
            .send(EnqueueRequest {
                job: job.clone(),
                reply,
            })
            .map_err(|_| batcher_gone())?;
        let id = JobId::new(answer.await.map_err(|_| batcher_gone())??);
        self.inner.hub.publish(&JobEvent {
            job: id,
            queue: job.queue().clone(),
            state: JobState::Pending,
            attempts: 0,
        });
        if job.delay().is_zero() {
            self.inner.hub.wake(job.queue());
        }
        Ok(id)
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        validate_batch(jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&NewJob> = jobs.iter().collect();
        let ids = insert_jobs(self.shared(), &refs).await?;
        for (id, job) in ids.iter().zip(jobs) {
            self.inner.hub.publish(&JobEvent {
                job: JobId::new(*id),
                queue: job.queue().clone(),
                state: JobState::Pending,
                attempts: 0,
            });
            if job.delay().is_zero() {
                self.inner.hub.wake(job.queue());
            }
        }
        Ok(ids.into_iter().map(JobId::new).collect())
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        let answer = self.send_reserve(queues, owner, lease_ttl, max)?;
        self.reserved(answer).await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        validate_ttl(ttl)?;
        let row = sqlx::query(self.inner.shared.sql.touch.clone())
            .bind(lease.job.get())
            .bind(lease.lease.owner().as_str())
            .bind(token(lease))
            .bind(millis(ttl))
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| lease.job.lease_lost())?;
        let expires_at: i64 = row.try_get("lease_expires_at").map_err(from_sqlx)?;
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
        let answer = self.send_complete(lease, result)?;
        self.completed(lease, answer).await
    }

    /// Both requests go to their batching tasks at once, so that the completion and the
    /// reservation share the wait for their batches instead of taking one after the other.
    async fn complete_and_reserve(
        &self,
        lease: &JobLease,
        result: Value,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<(Result<Job>, Vec<Reserved>)> {
        let completion = self.send_complete(lease, result);
        let reservation = self.send_reserve(queues, owner, lease_ttl, max)?;
        let completed = match completion {
            Ok(answer) => self.completed(lease, answer).await,
            Err(error) => Err(error),
        };
        Ok((completed, self.reserved(reservation).await?))
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let error = truncate_error(error);
        let mut tx = baton_sql::begin(&self.inner.shared.pool, None).await?;
        let row = sqlx::query(self.inner.shared.sql.select_current.clone())
            .bind(lease.job.get())
            .bind(lease.lease.owner().as_str())
            .bind(token(lease))
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| lease.job.lease_lost())?;
        let current = decode_job(&row)?;
        let delay = current.retry_delay(retry);
        let outcome = AttemptOutcome::Failed {
            error: error.clone(),
        };
        let job = self
            .end_attempt(&mut tx, &current, delay, &error, &outcome)
            .await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.deliver(&job, delay.is_some_and(|delay| delay.is_zero()));
        Ok(job)
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let mut tx = baton_sql::begin(&self.inner.shared.pool, None).await?;
        let row = sqlx::query(self.inner.shared.sql.select_for_update.clone())
            .bind(id.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        let current = decode_job(&row)?;
        match current.state {
            JobState::Canceled => return Ok(current),
            JobState::Succeeded | JobState::Failed => {
                return Err(Error::conflict(format!(
                    "job {id} already {}",
                    current.state
                )));
            }
            JobState::Pending | JobState::Running => {}
        }
        let row = sqlx::query(self.inner.shared.sql.cancel.clone())
            .bind(id.get())
            .bind(outcome_json(&AttemptOutcome::Canceled))
            .bind(self.inner.shared.origin)
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let job = decode_job(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.deliver(&job, false);
        Ok(job)
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        let mut tx = baton_sql::begin(&self.inner.shared.pool, None).await?;
        let row = sqlx::query(self.inner.shared.sql.select_for_update.clone())
            .bind(id.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        let current = decode_job(&row)?;
        match current.state {
            JobState::Pending | JobState::Running => return Ok(current),
            JobState::Succeeded => {
                return Err(Error::conflict(format!("job {id} already succeeded")));
            }
            JobState::Failed | JobState::Canceled => {}
        }
        let row = sqlx::query(self.inner.shared.sql.retry.clone())
            .bind(id.get())
            .bind(self.inner.shared.origin)
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let job = decode_job(&row)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.deliver(&job, true);
        Ok(job)
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        sqlx::query(self.inner.shared.sql.pause_queue.clone())
            .bind(queue.as_str())
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        let resumed = sqlx::query(self.inner.shared.sql.resume_queue.clone())
            .bind(queue.as_str())
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?
            .is_some();
        if resumed {
            self.inner.hub.wake(queue);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        let names: Vec<String> = sqlx::query_scalar(self.inner.shared.sql.paused_queues.clone())
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        names.into_iter().map(QueueName::new).collect()
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        validate_queue_list(limit)?;
        let names: Vec<String> = sqlx::query_scalar(self.inner.shared.sql.queues.clone())
            .bind(after.map_or("", QueueName::as_str))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        names.into_iter().map(QueueName::new).collect()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        validate_list(filter)?;
        let statement = self
            .inner
            .shared
            .sql
            .list(filter.queue.is_some(), filter.state.is_some());
        let mut query = sqlx::query(statement).bind(filter.before.map_or(i64::MAX, JobId::get));
        if let Some(queue) = &filter.queue {
            query = query.bind(queue.as_str());
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        let rows = query
            .bind(i64::try_from(filter.limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        let jobs = rows.iter().map(decode_job).collect::<Result<Vec<_>>>()?;
        Ok(JobPage::from_newest(jobs, filter.limit))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let row = sqlx::query(self.inner.shared.sql.get.clone())
            .bind(id.get())
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        let row = sqlx::query(self.inner.shared.sql.last.clone())
            .bind(queue.as_str())
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(decode_job).transpose()
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let rows = sqlx::query(self.inner.shared.sql.counts.clone())
            .bind(queue.as_str())
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        let mut counts = QueueCounts::default();
        for row in rows {
            let state: String = row.try_get("state").map_err(from_sqlx)?;
            let n: i64 = row.try_get("n").map_err(from_sqlx)?;
            let Ok(state) = state.parse::<JobState>() else {
                tracing::warn!(%state, "skipping jobs in an unknown state");
                continue;
            };
            *counts.get_mut(state) = u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        let mut requeued = Vec::new();
        loop {
            let (ids, more) = self.requeue_expired_batch().await?;
            requeued.extend(ids);
            if !more {
                return Ok(requeued);
            }
        }
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        // In batches, each its own short transaction, so that purging a million jobs never
        // holds one huge transaction open (its row locks, its WAL, vacuum held back).
        let cutoff: i64 = sqlx::query_scalar(self.inner.shared.sql.purge_cutoff.clone())
            .bind(millis(older_than))
            .fetch_one(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        let mut purged = 0;
        loop {
            let deleted = sqlx::query(self.inner.shared.sql.purge.clone())
                .bind(cutoff)
                .bind(PURGE_BATCH)
                .execute(&self.inner.shared.pool)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}
