//! Reservations and completions share write transactions: SQLite has one writer at a time,
//! so while one call holds this process's write turn the others queue their requests here, and
//! the next caller to get the turn runs every queued request in one transaction (flat
//! combining). Each request is still judged on its own: a completion whose lease is not
//! current gets `LeaseLost` without touching the rest, and each reservation takes jobs for its
//! own caller. A database error fails the whole transaction, and every caller in it gets that
//! error.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use baton_core::{
    AttemptOutcome, Error, Job, JobLease, JobState, Owner, QueueName, Reserved, Result, Timestamp,
};
use baton_sql::{JobRow, from_sqlx};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::jobs::{Changes, end_attempt, finish};
use crate::{SqliteBackend, Write};

/// The most requests one transaction runs.
const MAX_BATCH: usize = 1000;

/// One caller's request, waiting for a transaction.
pub(crate) enum Request {
    /// Complete the job of `lease` with `result`.
    Complete {
        lease: JobLease,
        result: Value,
        reply: oneshot::Sender<Result<Job>>,
    },
    /// Reserve up to `max` due jobs of `queues` for `owner`.
    Reserve {
        queues: Vec<QueueName>,
        owner: Owner,
        lease_ttl: Duration,
        max: usize,
        reply: oneshot::Sender<Result<Vec<Reserved>>>,
    },
}

/// A request's outcome, held until the transaction commits.
enum Done {
    Complete(oneshot::Sender<Result<Job>>, Box<Job>),
    Reserve(oneshot::Sender<Result<Vec<Reserved>>>, Vec<Reserved>),
}

/// Where a request's answer goes.
enum Reply {
    Complete(oneshot::Sender<Result<Job>>),
    Reserve(oneshot::Sender<Result<Vec<Reserved>>>),
}

impl Reply {
    fn fail(self, error: &Error) {
        match self {
            Self::Complete(reply) => drop(reply.send(Err(shared(error)))),
            Self::Reserve(reply) => drop(reply.send(Err(shared(error)))),
        }
    }
}

impl Request {
    fn fail(self, error: &Error) {
        match self {
            Self::Complete { reply, .. } => Reply::Complete(reply).fail(error),
            Self::Reserve { reply, .. } => Reply::Reserve(reply).fail(error),
        }
    }
}

impl Done {
    fn answer(self) {
        match self {
            Self::Complete(reply, job) => drop(reply.send(Ok(*job))),
            Self::Reserve(reply, reserved) => drop(reply.send(Ok(reserved))),
        }
    }

    fn fail(self, error: &Error) {
        match self {
            Self::Complete(reply, _) => Reply::Complete(reply).fail(error),
            Self::Reserve(reply, _) => Reply::Reserve(reply).fail(error),
        }
    }
}

/// Requests queued for the next transaction.
#[derive(Default)]
pub(crate) struct Requests(Mutex<Vec<Request>>);

impl Requests {
    fn queue(&self) -> MutexGuard<'_, Vec<Request>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SqliteBackend {
    /// Completes `lease`'s job with `result`, in a transaction shared with the requests
    /// queued meanwhile.
    pub(crate) async fn complete_combined(&self, lease: &JobLease, result: Value) -> Result<Job> {
        let (reply, answer) = oneshot::channel();
        self.combined(
            Request::Complete {
                lease: lease.clone(),
                result,
                reply,
            },
            answer,
        )
        .await
    }

    /// Reserves up to `max` due jobs of `queues` for `owner`, in a transaction shared with the
    /// requests queued meanwhile.
    pub(crate) async fn reserve_combined(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        let (reply, answer) = oneshot::channel();
        self.combined(
            Request::Reserve {
                queues: queues.to_vec(),
                owner: owner.clone(),
                lease_ttl,
                max,
                reply,
            },
            answer,
        )
        .await
    }

    /// Queues `request`, then either gets its answer or takes the write turn and runs every
    /// queued request itself, whichever comes first.
    async fn combined<T>(
        &self,
        request: Request,
        mut answer: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        self.inner.requests.queue().push(request);
        loop {
            tokio::select! {
                biased;
                answered = &mut answer => {
                    return answered.unwrap_or_else(|_| {
                        Err(Error::permanent(std::io::Error::other(
                            "a request was dropped unanswered",
                        )))
                    });
                }
                turn = self.inner.writer.lock() => {
                    let batch: Vec<Request> = {
                        let mut queue = self.inner.requests.queue();
                        let take = queue.len().min(MAX_BATCH);
                        queue.drain(..take).collect()
                    };
                    if batch.is_empty() {
                        // Another caller ran ours: its answer is on the way.
                        continue;
                    }
                    match self.begin(turn).await {
                        Ok(write) => self.run_batch(write, batch).await,
                        Err(error) => batch.into_iter().for_each(|request| request.fail(&error)),
                    }
                }
            }
        }
    }

    /// Runs `batch` in `write` and answers every caller.
    async fn run_batch(&self, mut write: Write<'_>, batch: Vec<Request>) {
        let mut changes = Changes::default();
        let mut done: Vec<Done> = Vec::with_capacity(batch.len());
        let mut batch = batch.into_iter();
        while let Some(request) = batch.next() {
            let outcome = match request {
                Request::Complete {
                    lease,
                    result,
                    reply,
                } => match self
                    .complete_in(&mut write, &lease, result, &mut changes)
                    .await
                {
                    Ok(job) => Ok(Done::Complete(reply, Box::new(job))),
                    Err(error) if error.is_lease_lost() => {
                        drop(reply.send(Err(error)));
                        continue;
                    }
                    Err(error) => Err((error, Reply::Complete(reply))),
                },
                Request::Reserve {
                    queues,
                    owner,
                    lease_ttl,
                    max,
                    reply,
                } => match self
                    .reserve_in(&mut write, &queues, &owner, lease_ttl, max, &mut changes)
                    .await
                {
                    Ok(reserved) => Ok(Done::Reserve(reply, reserved)),
                    Err(error) => Err((error, Reply::Reserve(reply))),
                },
            };
            match outcome {
                Ok(finished) => done.push(finished),
                Err((error, failed)) => {
                    // The transaction is broken: nothing of it may be committed.
                    let _ = write.rollback().await;
                    failed.fail(&error);
                    done.into_iter().for_each(|finished| finished.fail(&error));
                    batch.for_each(|request| request.fail(&error));
                    return;
                }
            }
        }
        match self.commit_and_announce(write, changes).await {
            Ok(()) => done.into_iter().for_each(Done::answer),
            Err(error) => done.into_iter().for_each(|finished| finished.fail(&error)),
        }
    }

    /// Completes the job of `lease` inside `write`.
    async fn complete_in(
        &self,
        write: &mut Write<'_>,
        lease: &JobLease,
        result: Value,
        changes: &mut Changes,
    ) -> Result<Job> {
        let now = Timestamp::from_millis(write.now);
        let mut job = self.current(write, lease).await?;
        end_attempt(&mut job, AttemptOutcome::Succeeded, now);
        job.result = Some(result);
        finish(&mut job, JobState::Succeeded, now);
        self.store(write, &job, changes).await?;
        Ok(job)
    }

    /// Reserves up to `max` due jobs of `queues` for `owner` inside `write`.
    async fn reserve_in(
        &self,
        write: &mut Write<'_>,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
        changes: &mut Changes,
    ) -> Result<Vec<Reserved>> {
        let expires_at = Timestamp::from_millis(write.now).saturating_add(lease_ttl);
        let mut reserved = Vec::new();
        for id in self.due(write, queues, max).await? {
            let row: Option<JobRow> = sqlx::query_as(self.sql().reserve_job.clone())
                .bind(owner.as_str().to_owned())
                .bind(expires_at.as_millis())
                .bind(owner.as_str().to_owned())
                .bind(write.now)
                .bind(id)
                .fetch_optional(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            let Some(row) = row else { continue };
            let job = row.into_job()?;
            let lease = job.lease.clone().ok_or_else(|| job.id.lease_lost())?;
            let event = job.event();
            self.record_event(write, &event).await?;
            changes.events.push(event);
            reserved.push(Reserved {
                lease: JobLease { job: job.id, lease },
                job,
            });
        }
        Ok(reserved)
    }
}

/// `error` as each caller of a failed transaction sees it: a backend error with its message,
/// as retryable as the original.
fn shared(error: &Error) -> Error {
    Error::Backend {
        message: error.to_string(),
        transient: error.is_retryable(),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use baton_core::{NewJob, Owner, Queue, QueueName};

    use crate::{SqliteBackend, SqliteConfig};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_completions_each_succeed_once_and_a_second_try_loses_its_lease() {
        let directory =
            std::env::temp_dir().join(format!("baton-sqlite-combine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let url = format!("sqlite://{}", directory.join("combine.db").display());
        let backend = Arc::new(
            SqliteBackend::connect(SqliteConfig::new(url))
                .await
                .unwrap(),
        );
        let queue = QueueName::new("q").unwrap();
        let jobs: Vec<NewJob> = (0..64)
            .map(|n| NewJob::new(queue.clone(), serde_json::json!(n)).unwrap())
            .collect();
        backend.enqueue_batch(&jobs).await.unwrap();
        let reserved = backend
            .reserve(
                std::slice::from_ref(&queue),
                &Owner::new("w").unwrap(),
                Duration::from_secs(60),
                64,
            )
            .await
            .unwrap();
        assert_eq!(reserved.len(), 64);

        // Every lease completed twice at once: the two calls often share a transaction.
        let mut calls = tokio::task::JoinSet::new();
        for job in reserved.iter().chain(&reserved) {
            let (backend, lease) = (backend.clone(), job.lease.clone());
            calls.spawn(async move { backend.complete(&lease, serde_json::json!("ok")).await });
        }
        let (mut succeeded, mut lost) = (0, 0);
        while let Some(outcome) = calls.join_next().await {
            match outcome.unwrap() {
                Ok(job) => {
                    assert_eq!(job.state, baton_core::JobState::Succeeded);
                    succeeded += 1;
                }
                Err(error) if error.is_lease_lost() => lost += 1,
                Err(error) => panic!("unexpected error: {error}"),
            }
        }
        assert_eq!((succeeded, lost), (64, 64));
        let counts = backend.counts(&queue).await.unwrap();
        assert_eq!((counts.succeeded, counts.running), (64, 0), "{counts:?}");
        let _ = std::fs::remove_dir_all(directory);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reservations_share_out_every_job_exactly_once() {
        let directory =
            std::env::temp_dir().join(format!("baton-sqlite-combine-r-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let url = format!("sqlite://{}", directory.join("combine.db").display());
        let backend = Arc::new(
            SqliteBackend::connect(SqliteConfig::new(url))
                .await
                .unwrap(),
        );
        let queue = QueueName::new("q").unwrap();
        let jobs: Vec<NewJob> = (0..200)
            .map(|n| NewJob::new(queue.clone(), serde_json::json!(n)).unwrap())
            .collect();
        backend.enqueue_batch(&jobs).await.unwrap();

        let mut calls = tokio::task::JoinSet::new();
        for worker in 0..50 {
            let (backend, queue) = (backend.clone(), queue.clone());
            calls.spawn(async move {
                let owner = Owner::new(format!("w{worker}")).unwrap();
                let reserved = backend
                    .reserve(&[queue], &owner, Duration::from_secs(60), 5)
                    .await
                    .unwrap();
                assert!(reserved.iter().all(|r| r.lease.lease.owner() == &owner));
                reserved.into_iter().map(|r| r.job.id).collect::<Vec<_>>()
            });
        }
        let mut ids = Vec::new();
        while let Some(taken) = calls.join_next().await {
            ids.extend(taken.unwrap());
        }
        let taken = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((taken, ids.len()), (200, 200), "every job once, none twice");
        let _ = std::fs::remove_dir_all(directory);
    }
}
