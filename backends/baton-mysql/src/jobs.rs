//! The job transactions behind [`Queue`](baton_core::Queue): a job row per job, reserved
//! with `FOR UPDATE SKIP LOCKED`; every other change locks the row, decides in Rust like the
//! memory backend, and writes it back in the same transaction together with its event row.

use std::time::Duration;

use baton_core::{
    Attempt, AttemptOutcome, Error, FencingToken, Job, JobEvent, JobId, JobLease, JobState, Lease,
    NewJob, Owner, QueueName, Reserved, Result, Retry, Timestamp, TraceParent,
};
use baton_sql::{JobRow, encode_history, encode_json, encode_retry};
use sqlx::{MySqlConnection, Row};

use crate::MysqlStore;
use crate::sql::{TxError, millis, now};

use crate::job_logic::{
    Outbox, attempts_i32, end_attempt, finish, insert_chunks, is_current, retry_or_fail,
};

/// The columns of [`JobRow`].
macro_rules! job_columns {
    () => {
        "id, queue, payload, priority, state, attempts, retry, created_at, run_at, finished_at, \
         result, error, lease_owner, lease_token, lease_expires_at, history, trace_parent"
    };
}

pub(crate) const INSERT_JOBS: &str = "INSERT INTO {prefix}jobs (queue, payload, priority, state, attempts, \
     retry, created_at, run_at, lease_token, history, trace_parent) VALUES {rows}";
pub(crate) const JOB_ROW: &str = "(?, ?, ?, 'pending', 0, ?, ?, ?, 0, '[]', ?)";
pub(crate) const COUNT_RANGE: &str = "SELECT COUNT(*) FROM {prefix}jobs WHERE id BETWEEN ? AND ?";
pub(crate) const INSERT_EVENTS: &str = "INSERT INTO {prefix}events (origin, job_id, queue, state, attempts, \
     created_at) VALUES {rows}";
pub(crate) const EVENT_ROW: &str = "(?, ?, ?, ?, ?, {now})";
/// Due jobs of one queue in reservation order.
///
/// `EXPLAIN` on MariaDB 10.11 over 1,000,000 succeeded and 100,000 pending jobs of the queue
/// (`LIMIT 32`, these columns): `type: range, key: due, key_len: 868, rows: 219948 (estimate),
/// Extra: Using where` — an ordered scan of the `due` index that stops at the limit, no
/// filesort; the whole query answers in about 20 ms through the command-line client. (With
/// `queue IN (a, b)` the plan becomes `range … Using filesort` and takes 0.7 s, hence one scan
/// per queue.)
pub(crate) const SELECT_DUE: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM {prefix}jobs WHERE state = 'pending' AND queue = ? AND run_at <= ? \
     AND NOT EXISTS (SELECT 1 FROM {prefix}paused_queues WHERE queue = ?) \
     ORDER BY priority DESC, run_at, id LIMIT ? FOR UPDATE SKIP LOCKED"
);
/// Pauses a queue: queue.
pub(crate) const PAUSE_QUEUE: &str =
    "INSERT IGNORE INTO {prefix}paused_queues (queue, since) VALUES (?, {now})";
/// Resumes a queue: queue.
pub(crate) const RESUME_QUEUE: &str = "DELETE FROM {prefix}paused_queues WHERE queue = ?";
/// The paused queues in name order.
pub(crate) const PAUSED_QUEUES: &str = "SELECT queue FROM {prefix}paused_queues ORDER BY queue";
/// Every queue that holds a job or is paused, in byte order (`utf8mb4_bin` orders by code
/// point, as UTF-8 bytes and `QueueName` do; its padding of spaces changes nothing, since no
/// name ends in white space or holds a control character): after (`''` for the first page),
/// limit, after, limit, limit.
///
/// `EXPLAIN` on MariaDB 10.11 over 1,000,000 jobs in five queues: `type: range, key: by_queue,
/// key_len: 802, rows: 4, Extra: Using where; Using index for group-by` — a loose index scan,
/// one descent per queue (`ANALYZE`: 5 rows read, 18 pages, under 0.01 ms); the paused queues
/// are a range of their primary key.
pub(crate) const QUEUES: &str = "(SELECT DISTINCT queue FROM {prefix}jobs WHERE queue > ? \
     ORDER BY queue LIMIT ?) \
     UNION (SELECT queue FROM {prefix}paused_queues WHERE queue > ? ORDER BY queue LIMIT ?) \
     ORDER BY queue LIMIT ?";
/// Starts an attempt on each selected job, for the owner at the same place in the second list
/// as the job's id in the first. Assignments apply left to right on MySQL and MariaDB alike:
/// `history` reads the new owner and the old count of attempts.
pub(crate) const START_ATTEMPTS: &str = "UPDATE {prefix}jobs SET \
     lease_owner = ELT(FIELD(id, {in}), {in}), \
     history = JSON_ARRAY_APPEND(history, '$', JSON_OBJECT('number', attempts + 1, \
     'owner', lease_owner, 'started_at', ?, 'finished_at', NULL)), \
     state = 'running', lease_token = lease_token + 1, lease_expires_at = ?, \
     attempts = attempts + 1 WHERE id IN ({in})";
pub(crate) const LOCK_JOB: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM {prefix}jobs WHERE id = ? FOR UPDATE"
);
pub(crate) const SELECT_JOB: &str =
    concat!("SELECT ", job_columns!(), " FROM {prefix}jobs WHERE id = ?");
pub(crate) const SELECT_LAST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM {prefix}jobs WHERE queue = ? ORDER BY id DESC LIMIT 1"
);
/// `Queue::list` by which filters it has (queue, state): the id bound, then the queue and the
/// state when filtered on, then the row limit.
pub(crate) const LIST: [&str; 4] = [
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM {prefix}jobs WHERE id < ? ORDER BY id DESC LIMIT ?"
    ),
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM {prefix}jobs WHERE id < ? AND queue = ? ORDER BY id DESC LIMIT ?"
    ),
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM {prefix}jobs WHERE id < ? AND state = ? ORDER BY id DESC LIMIT ?"
    ),
    concat!(
        "SELECT ",
        job_columns!(),
        " FROM {prefix}jobs WHERE id < ? AND queue = ? AND state = ? ORDER BY id DESC LIMIT ?"
    ),
];
pub(crate) const SELECT_EXPIRED: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM {prefix}jobs WHERE state = 'running' AND lease_expires_at <= ? \
     ORDER BY lease_expires_at, id LIMIT 500 FOR UPDATE SKIP LOCKED"
);
pub(crate) const WRITE_JOB: &str = "UPDATE {prefix}jobs SET state = ?, attempts = ?, run_at = ?, \
     finished_at = ?, result = ?, error = ?, lease_owner = ?, lease_expires_at = ?, history = ? \
     WHERE id = ?";
pub(crate) const COUNTS: &str =
    "SELECT state, COUNT(*) FROM {prefix}jobs WHERE queue = ? GROUP BY state";
pub(crate) const PURGE: &str = "DELETE FROM {prefix}jobs WHERE finished_at IS NOT NULL AND finished_at <= ? \
     ORDER BY finished_at LIMIT 10000";

/// Rows per multi-row insert.
pub(crate) const INSERT_CHUNK: usize = 1000;
/// Payload bytes per multi-row insert, well under the server's `max_allowed_packet`
/// (16 MiB by default on MariaDB).
pub(crate) const INSERT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

impl MysqlStore {
    /// Delivers a committed change to this process's subscribers and waiters.
    pub(crate) fn deliver(&self, outbox: &Outbox) {
        for event in &outbox.events {
            self.inner.hub.publish(event);
        }
        for queue in &outbox.wake {
            self.inner.hub.wake(queue);
        }
    }

    /// Writes `events` for other processes, in the caller's transaction.
    pub(crate) async fn write_events(
        &self,
        conn: &mut MySqlConnection,
        events: &[JobEvent],
    ) -> Result<(), TxError> {
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut query = sqlx::query(self.inner.statements.rows(
                INSERT_EVENTS,
                EVENT_ROW,
                chunk.len(),
            ));
            for event in chunk {
                query = query
                    .bind(&self.inner.origin)
                    .bind(event.job.get())
                    .bind(event.queue.as_str())
                    .bind(event.state.as_str())
                    .bind(attempts_i32(event.attempts));
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub(crate) async fn lock_job(
        &self,
        conn: &mut MySqlConnection,
        id: JobId,
    ) -> Result<Option<Job>, TxError> {
        let row: Option<JobRow> = sqlx::query_as(self.stmt(LOCK_JOB))
            .bind(id.get())
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.map(JobRow::into_job).transpose()?)
    }

    pub(crate) async fn write_job(
        &self,
        conn: &mut MySqlConnection,
        job: &Job,
    ) -> Result<(), TxError> {
        sqlx::query(self.stmt(WRITE_JOB))
            .bind(job.state.as_str())
            .bind(attempts_i32(job.attempts))
            .bind(job.run_at.as_millis())
            .bind(job.finished_at.map(Timestamp::as_millis))
            .bind(job.result.as_ref().map(encode_json))
            .bind(job.error.as_deref())
            .bind(job.lease.as_ref().map(|lease| lease.owner().as_str()))
            .bind(
                job.lease
                    .as_ref()
                    .map(|lease| lease.expires_at().as_millis()),
            )
            .bind(encode_history(&job.history))
            .bind(job.id.get())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Locks the job of `lease`, checks that the lease is current, applies `change`, writes the
    /// job and its event, and commits.
    pub(crate) async fn change_leased(
        &self,
        lease: &JobLease,
        change: impl Fn(&mut Job, i64),
    ) -> Result<(Job, Outbox), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let mut job = self
            .lock_job(&mut tx, lease.job)
            .await?
            .filter(|job| is_current(job, lease, now))
            .ok_or_else(|| lease.job.lease_lost())?;
        change(&mut job, now);
        self.write_job(&mut tx, &job).await?;
        let mut outbox = Outbox::default();
        if job.state != JobState::Running {
            outbox.push(&job, now);
            self.write_events(&mut tx, &outbox.events).await?;
        }
        tx.commit().await?;
        Ok((job, outbox))
    }

    pub(crate) async fn enqueue_once(
        &self,
        jobs: &[NewJob],
    ) -> Result<(Vec<JobId>, Outbox), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let mut ids = Vec::with_capacity(jobs.len());
        for chunk in insert_chunks(jobs, self.inner.consecutive_ids) {
            let mut query = sqlx::query(self.inner.statements.rows(
                INSERT_JOBS,
                JOB_ROW,
                chunk.len(),
            ));
            for job in chunk {
                query = query
                    .bind(job.queue().as_str())
                    .bind(encode_json(job.payload()))
                    .bind(job.priority().0)
                    .bind(encode_retry(job.retry()))
                    .bind(now)
                    .bind(now.saturating_add(millis(job.delay())))
                    .bind(job.trace_parent().map(TraceParent::as_str));
            }
            let done = query.execute(&mut *tx).await?;
            let first = i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX);
            let last = first.saturating_add(i64::try_from(chunk.len()).unwrap_or(0) - 1);
            if chunk.len() > 1 {
                let count: i64 = sqlx::query(self.stmt(COUNT_RANGE))
                    .bind(first)
                    .bind(last)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if count != i64::try_from(chunk.len()).unwrap_or(0) {
                    return Err(Error::Backend {
                        message: "a multi-row insert got non-consecutive ids".to_owned(),
                        transient: true,
                        source: None,
                    }
                    .into());
                }
            }
            ids.extend((first..=last).map(JobId::new));
        }
        let mut outbox = Outbox::default();
        for (job, id) in jobs.iter().zip(&ids) {
            outbox.events.push(JobEvent {
                job: *id,
                queue: job.queue().clone(),
                state: JobState::Pending,
                attempts: 0,
            });
            if job.delay().is_zero() {
                outbox.wake.push(job.queue().clone());
            }
        }
        outbox.wake.sort();
        outbox.wake.dedup();
        self.write_events(&mut tx, &outbox.events).await?;
        tx.commit().await?;
        Ok((ids, outbox))
    }

    /// One try at reserving from `queues`, in one transaction, for every request in `wants`
    /// (an owner and the most jobs it takes): due jobs in priority order, dealt out one at a
    /// time to each request in turn. Returns each request's jobs, in the order of `wants`.
    pub(crate) async fn reserve_all_once(
        &self,
        queues: &[QueueName],
        lease_ttl: Duration,
        wants: &[(&Owner, usize)],
    ) -> Result<(Vec<Vec<Reserved>>, Outbox), TxError> {
        let total: usize = wants.iter().map(|(_, max)| max).sum();
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let expires_at = now.saturating_add(millis(lease_ttl));
        // One ordered index scan per queue, each stopping at `total`, merged here: a single
        // `queue IN (…)` over several queues would sort every due job of them all.
        let mut rows: Vec<JobRow> = Vec::new();
        for queue in queues {
            rows.extend(
                sqlx::query_as::<_, JobRow>(self.stmt(SELECT_DUE))
                    .bind(queue.as_str())
                    .bind(now)
                    .bind(queue.as_str())
                    .bind(i64::try_from(total).unwrap_or(i64::MAX))
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        if queues.len() > 1 {
            rows.sort_by_key(|row| (std::cmp::Reverse(row.priority), row.run_at, row.id));
            rows.truncate(total);
        }
        if rows.is_empty() {
            tx.commit().await?;
            return Ok((
                wants.iter().map(|_| Vec::new()).collect(),
                Outbox::default(),
            ));
        }
        let shares = deal(rows, wants);
        let dealt: Vec<(i64, &str)> = shares
            .iter()
            .zip(wants)
            .flat_map(|(share, (owner, _))| share.iter().map(|row| (row.id, owner.as_str())))
            .collect();
        let mut update = sqlx::query(self.stmt_in(START_ATTEMPTS, dealt.len()));
        for (id, _) in &dealt {
            update = update.bind(id);
        }
        for (_, owner) in &dealt {
            update = update.bind(*owner);
        }
        update = update.bind(now).bind(expires_at);
        for (id, _) in &dealt {
            update = update.bind(id);
        }
        update.execute(&mut *tx).await?;
        let mut outbox = Outbox::default();
        let mut reserved = Vec::with_capacity(wants.len());
        for (share, (owner, _)) in shares.into_iter().zip(wants) {
            let mut jobs = Vec::with_capacity(share.len());
            for row in share {
                let token = u64::try_from(row.lease_token).unwrap_or(0) + 1;
                let started = started(row.into_job()?, owner, token, now, expires_at);
                outbox.push(&started.job, now);
                jobs.push(started);
            }
            reserved.push(jobs);
        }
        self.write_events(&mut tx, &outbox.events).await?;
        tx.commit().await?;
        Ok((reserved, outbox))
    }

    pub(crate) async fn cancel_once(&self, id: JobId) -> Result<(Job, Outbox), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let mut job = self
            .lock_job(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        match job.state {
            JobState::Canceled => {
                tx.commit().await?;
                return Ok((job, Outbox::default()));
            }
            JobState::Succeeded | JobState::Failed => {
                return Err(Error::conflict(format!("job {id} already {}", job.state)).into());
            }
            JobState::Pending => {}
            JobState::Running => end_attempt(&mut job, AttemptOutcome::Canceled, now),
        }
        finish(&mut job, JobState::Canceled, now);
        self.write_job(&mut tx, &job).await?;
        let mut outbox = Outbox::default();
        outbox.push(&job, now);
        self.write_events(&mut tx, &outbox.events).await?;
        tx.commit().await?;
        Ok((job, outbox))
    }

    pub(crate) async fn retry_once(&self, id: JobId) -> Result<(Job, Outbox), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let mut job = self
            .lock_job(&mut tx, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        match job.state {
            JobState::Pending | JobState::Running => {
                tx.commit().await?;
                return Ok((job, Outbox::default()));
            }
            JobState::Succeeded => {
                return Err(Error::conflict(format!("job {id} already succeeded")).into());
            }
            JobState::Failed | JobState::Canceled => {}
        }
        job.finished_at = None;
        retry_or_fail(&mut job, Some(Duration::ZERO), now);
        self.write_job(&mut tx, &job).await?;
        let mut outbox = Outbox::default();
        outbox.push(&job, now);
        self.write_events(&mut tx, &outbox.events).await?;
        tx.commit().await?;
        Ok((job, outbox))
    }

    /// One batch of expired leases; returns the jobs it touched.
    pub(crate) async fn requeue_once(&self) -> Result<(Vec<JobId>, Outbox), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let rows: Vec<JobRow> = sqlx::query_as(self.stmt(SELECT_EXPIRED))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        let mut outbox = Outbox::default();
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let mut job = row.into_job()?;
            end_attempt(&mut job, AttemptOutcome::Expired, now);
            job.error = Some("lease expired".to_owned());
            let delay = job.retry_delay(Retry::ByPolicy);
            retry_or_fail(&mut job, delay, now);
            self.write_job(&mut tx, &job).await?;
            outbox.push(&job, now);
            ids.push(job.id);
        }
        self.write_events(&mut tx, &outbox.events).await?;
        tx.commit().await?;
        Ok((ids, outbox))
    }
}

/// `rows` dealt one at a time to each of `wants` in turn, each taking at most its count.
fn deal(rows: Vec<JobRow>, wants: &[(&Owner, usize)]) -> Vec<Vec<JobRow>> {
    let mut shares: Vec<Vec<JobRow>> = wants.iter().map(|_| Vec::new()).collect();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut dealt = false;
        for (share, (_, max)) in shares.iter_mut().zip(wants) {
            if share.len() < *max
                && let Some(row) = rows.next()
            {
                share.push(row);
                dealt = true;
            }
        }
        if !dealt {
            break;
        }
    }
    shares
}

/// `job` as the update by [`START_ATTEMPTS`] left it: running its next attempt for `owner`
/// under `token`.
fn started(mut job: Job, owner: &Owner, token: u64, now: i64, expires_at: i64) -> Reserved {
    let lease = Lease::granted(
        owner.clone(),
        FencingToken::new(token),
        Timestamp::from_millis(expires_at),
    );
    job.state = JobState::Running;
    job.attempts += 1;
    job.lease = Some(lease.clone());
    job.history.push(Attempt {
        number: job.attempts,
        owner: owner.clone(),
        started_at: Timestamp::from_millis(now),
        finished_at: None,
        outcome: None,
    });
    Reserved {
        lease: JobLease { job: job.id, lease },
        job,
    }
}
