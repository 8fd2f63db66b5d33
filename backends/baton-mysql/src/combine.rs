//! Concurrent calls share transactions: `complete` and `reserve` calls of one backend queue
//! their requests here, and one caller at a time runs every queued request of its kind in one
//! transaction (flat combining), so that one commit serves many. Each completion is still
//! judged against its own lease (one that is not current gets `LeaseLost` and the rest go on);
//! each reservation gets at most its own count of jobs, and reservations of the same queues
//! are dealt due jobs in turn. A database error fails the whole transaction (after the usual
//! retries of a deadlock), and every caller in it gets that error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use baton_core::{
    AttemptOutcome, Error, Job, JobLease, JobState, Owner, QueueName, Reserved, Result,
};
use baton_sql::JobRow;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::MysqlStore;
use crate::job_logic::{Outbox, end_attempt, finish, is_current};
use crate::sql::{TxError, now, retrying};

/// The most requests one transaction runs.
const MAX_BATCH: usize = 500;

/// Locks the rows of several jobs, in id order.
const LOCK_JOBS: &str = "SELECT id, queue, payload, priority, state, attempts, retry, created_at, \
     run_at, finished_at, result, error, lease_owner, lease_token, lease_expires_at, history, \
     trace_parent FROM {prefix}jobs WHERE id IN ({in}) ORDER BY id FOR UPDATE";

/// Requests of one kind queued for the next shared transaction, and the turn to run them.
pub(crate) struct Combiner<R> {
    queue: Mutex<Vec<R>>,
    turn: tokio::sync::Mutex<()>,
}

impl<R> Default for Combiner<R> {
    fn default() -> Self {
        Self {
            queue: Mutex::default(),
            turn: tokio::sync::Mutex::default(),
        }
    }
}

impl<R> Combiner<R> {
    fn queue(&self) -> MutexGuard<'_, Vec<R>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `request` and waits for `answer`, its reply; whenever the turn is free first,
    /// takes it and runs the queued requests (this one among them) with `run`.
    async fn submit<T, Fut>(
        &self,
        request: R,
        mut answer: oneshot::Receiver<Result<T>>,
        run: impl Fn(Vec<R>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = ()>,
    {
        self.queue().push(request);
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
                _turn = self.turn.lock() => {
                    let batch: Vec<R> = {
                        let mut queue = self.queue();
                        let take = queue.len().min(MAX_BATCH);
                        queue.drain(..take).collect()
                    };
                    if !batch.is_empty() {
                        run(batch).await;
                    }
                }
            }
        }
    }
}

/// One caller's completion, waiting for a transaction.
pub(crate) struct Completion {
    lease: JobLease,
    result: Value,
    reply: oneshot::Sender<Result<Job>>,
}

/// One caller's reservation, waiting for a transaction.
pub(crate) struct Reservation {
    /// Sorted and without duplicates, so that equal sets compare equal.
    queues: Vec<QueueName>,
    owner: Owner,
    ttl: Duration,
    max: usize,
    reply: oneshot::Sender<Result<Vec<Reserved>>>,
}

impl MysqlStore {
    /// Completes `lease`'s job with `result`, in a transaction shared with the completions
    /// queued meanwhile.
    pub(crate) async fn complete_combined(&self, lease: &JobLease, result: Value) -> Result<Job> {
        let (reply, answer) = oneshot::channel();
        let completion = Completion {
            lease: lease.clone(),
            result,
            reply,
        };
        self.inner
            .completions
            .submit(completion, answer, |batch| self.run_completions(batch))
            .await
    }

    /// Reserves up to `max` jobs of `queues` (sorted, without duplicates) for `owner`, in a
    /// transaction shared with the reservations queued meanwhile.
    pub(crate) async fn reserve_combined(
        &self,
        queues: Vec<QueueName>,
        owner: &Owner,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        let (reply, answer) = oneshot::channel();
        let reservation = Reservation {
            queues,
            owner: owner.clone(),
            ttl,
            max,
            reply,
        };
        self.inner
            .reservations
            .submit(reservation, answer, |batch| self.run_reservations(batch))
            .await
    }

    /// Runs `batch` in one transaction and answers every caller.
    async fn run_completions(&self, batch: Vec<Completion>) {
        let requests: Vec<(&JobLease, &Value)> = batch
            .iter()
            .map(|completion| (&completion.lease, &completion.result))
            .collect();
        match retrying(|| self.complete_all_once(&requests)).await {
            Ok((outcomes, outbox)) => {
                self.deliver(&outbox);
                for (completion, outcome) in batch.into_iter().zip(outcomes) {
                    let answer = outcome.ok_or_else(|| completion.lease.job.lease_lost());
                    drop(completion.reply.send(answer));
                }
            }
            Err(error) => {
                for completion in batch {
                    drop(completion.reply.send(Err(shared(&error))));
                }
            }
        }
    }

    /// Runs `batch` in one transaction per set of queues and lease time, and answers every
    /// caller.
    async fn run_reservations(&self, batch: Vec<Reservation>) {
        let mut groups: Vec<Vec<Reservation>> = Vec::new();
        for reservation in batch {
            match groups.iter_mut().find(|group| {
                group[0].queues == reservation.queues && group[0].ttl == reservation.ttl
            }) {
                Some(group) => group.push(reservation),
                None => groups.push(vec![reservation]),
            }
        }
        for group in groups {
            let outcome = {
                let wants: Vec<(&Owner, usize)> = group
                    .iter()
                    .map(|reservation| (&reservation.owner, reservation.max))
                    .collect();
                retrying(|| self.reserve_all_once(&group[0].queues, group[0].ttl, &wants)).await
            };
            match outcome {
                Ok((shares, outbox)) => {
                    self.deliver(&outbox);
                    for (reservation, share) in group.into_iter().zip(shares) {
                        drop(reservation.reply.send(Ok(share)));
                    }
                }
                Err(error) => {
                    for reservation in group {
                        drop(reservation.reply.send(Err(shared(&error))));
                    }
                }
            }
        }
    }
    /// One try at completing every request in one transaction: per request, the finished job,
    /// or `None` if its lease was not current.
    async fn complete_all_once(
        &self,
        requests: &[(&JobLease, &Value)],
    ) -> Result<(Vec<Option<Job>>, Outbox), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let mut ids: Vec<i64> = requests.iter().map(|(lease, _)| lease.job.get()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut query = sqlx::query_as::<_, JobRow>(self.stmt_in(LOCK_JOBS, ids.len()));
        for id in &ids {
            query = query.bind(id);
        }
        let mut jobs: HashMap<i64, Job> = HashMap::with_capacity(ids.len());
        for row in query.fetch_all(&mut *tx).await? {
            let job = row.into_job()?;
            jobs.insert(job.id.get(), job);
        }
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut outbox = Outbox::default();
        for (lease, result) in requests {
            let Some(job) = jobs
                .get_mut(&lease.job.get())
                .filter(|job| is_current(job, lease, now))
            else {
                outcomes.push(None);
                continue;
            };
            end_attempt(job, AttemptOutcome::Succeeded, now);
            job.result = Some((*result).clone());
            finish(job, JobState::Succeeded, now);
            self.write_job(&mut tx, job).await?;
            outbox.push(job, now);
            outcomes.push(Some(job.clone()));
        }
        self.write_events(&mut tx, &outbox.events).await?;
        tx.commit().await?;
        Ok((outcomes, outbox))
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
