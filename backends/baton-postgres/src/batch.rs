//! Group commit: concurrent `reserve` and `complete` calls of one backend share statements.
//!
//! Each call is handed to a batching task through a channel and answered through a oneshot.
//! A task takes every request queued while the previous batch ran (up to [`MAX_SLOTS`] jobs)
//! and runs it as one statement, so one commit (one fsync) serves many callers. Fencing stays
//! per job: every row of a batched completion is checked against its own lease, and a caller
//! whose row did not match gets `LeaseLost`. One task per kind ([`TASKS`]): every commit that
//! notifies takes PostgreSQL's global notify lock until its WAL is flushed, so more tasks would
//! only queue on that lock with smaller batches (measured: one task per kind is faster).

use std::collections::HashMap;
use std::sync::Arc;

use baton_core::{Error, Job, NewJob, QueueName, Result};
use baton_sql::is_transient;
use sqlx::{PgPool, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::queue::decode_job;
use crate::sql::Statements;

/// The most jobs one batch reserves or completes.
const MAX_SLOTS: usize = 1000;
/// Batching tasks per kind of call (see the module documentation).
const TASKS: usize = 1;

/// What the batching tasks need: no handle back to the backend, so they end when it is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) sql: Arc<Statements>,
    pub(crate) origin: i64,
}

/// One caller's reservation.
#[derive(Debug)]
pub(crate) struct ReserveRequest {
    pub(crate) queues: Vec<QueueName>,
    pub(crate) owner: String,
    pub(crate) ttl_ms: i64,
    pub(crate) max: usize,
    pub(crate) reply: oneshot::Sender<Result<Vec<Job>>>,
}

/// One caller's completion; answered with the job, or `None` if its lease was not current.
#[derive(Debug)]
pub(crate) struct CompleteRequest {
    pub(crate) id: i64,
    pub(crate) owner: String,
    pub(crate) token: i64,
    pub(crate) result: String,
    pub(crate) reply: oneshot::Sender<Result<Option<Job>>>,
}

/// One caller's single-job enqueue; answered with the job's id.
#[derive(Debug)]
pub(crate) struct EnqueueRequest {
    pub(crate) job: NewJob,
    pub(crate) reply: oneshot::Sender<Result<i64>>,
}

/// The senders to the batching tasks.
#[derive(Debug)]
pub(crate) struct Batchers {
    pub(crate) reserve: mpsc::UnboundedSender<ReserveRequest>,
    pub(crate) complete: mpsc::UnboundedSender<CompleteRequest>,
    pub(crate) enqueue: mpsc::UnboundedSender<EnqueueRequest>,
}

impl Batchers {
    /// Starts the batching tasks; they stop once these senders are dropped.
    pub(crate) fn spawn(shared: &Shared) -> Self {
        let (reserve, reserve_rx) = mpsc::unbounded_channel();
        let (complete, complete_rx) = mpsc::unbounded_channel();
        let (enqueue, enqueue_rx) = mpsc::unbounded_channel();
        let enqueue_rx = Arc::new(Mutex::new(enqueue_rx));
        let reserve_rx = Arc::new(Mutex::new(reserve_rx));
        let complete_rx = Arc::new(Mutex::new(complete_rx));
        for _ in 0..TASKS {
            let (shared_r, rx) = (shared.clone(), reserve_rx.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx, |r: &ReserveRequest| r.max).await {
                    reserve_batch(&shared_r, batch).await;
                }
            });
            let (shared_c, rx) = (shared.clone(), complete_rx.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx, |_: &CompleteRequest| 1).await {
                    complete_batch(&shared_c, batch).await;
                }
            });
            let (shared_e, rx) = (shared.clone(), enqueue_rx.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx, |_: &EnqueueRequest| 1).await {
                    enqueue_batch(&shared_e, batch).await;
                }
            });
        }
        Self {
            reserve,
            complete,
            enqueue,
        }
    }
}

/// The next batch: waits for one request, then takes those already queued up to the limit.
async fn next_batch<R>(
    receiver: &Mutex<mpsc::UnboundedReceiver<R>>,
    weight: impl Fn(&R) -> usize,
) -> Option<Vec<R>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut total = weight(&first);
    let mut batch = vec![first];
    while total < MAX_SLOTS {
        let Ok(next) = receiver.try_recv() else {
            break;
        };
        total += weight(&next);
        batch.push(next);
    }
    Some(batch)
}

/// A failure of a whole batch, as each of its callers sees it.
fn shared_error(error: &sqlx::Error) -> Error {
    Error::Backend {
        message: error.to_string(),
        transient: is_transient(error),
        source: None,
    }
}

async fn reserve_batch(shared: &Shared, batch: Vec<ReserveRequest>) {
    let mut groups: Vec<Vec<ReserveRequest>> = Vec::new();
    for request in batch {
        match groups.iter_mut().find(|g| g[0].queues == request.queues) {
            Some(group) => group.push(request),
            None => groups.push(vec![request]),
        }
    }
    for group in groups {
        reserve_group(shared, group).await;
    }
}

/// Reserves for callers asking for the same queues, in one statement.
async fn reserve_group(shared: &Shared, group: Vec<ReserveRequest>) {
    let mut owners: Vec<&str> = Vec::new();
    let mut ttls: Vec<i64> = Vec::new();
    let mut slot_caller: Vec<usize> = Vec::new();
    for (caller, request) in group.iter().enumerate() {
        for _ in 0..request.max {
            owners.push(&request.owner);
            ttls.push(request.ttl_ms);
            slot_caller.push(caller);
        }
    }
    let queues = &group[0].queues;
    let query = if let [queue] = queues.as_slice() {
        sqlx::query(shared.sql.reserve(false, owners.len())).bind(queue.as_str())
    } else {
        let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
        sqlx::query(shared.sql.reserve(true, owners.len())).bind(names)
    };
    let rows = query
        .bind(&owners)
        .bind(&ttls)
        .bind(shared.origin)
        .fetch_all(&shared.pool)
        .await;
    let mut answers: Vec<Result<Vec<Job>>> = group.iter().map(|_| Ok(Vec::new())).collect();
    match rows {
        Err(error) => {
            for answer in &mut answers {
                *answer = Err(shared_error(&error));
            }
        }
        Ok(rows) => {
            for row in &rows {
                let slot = row
                    .try_get::<i32, _>("rn")
                    .ok()
                    .and_then(|rn| usize::try_from(rn - 1).ok())
                    .and_then(|slot| slot_caller.get(slot).copied());
                let job = decode_job(row);
                let Some(caller) = slot else {
                    tracing::error!("a reserved row has no caller slot");
                    continue;
                };
                match (&mut answers[caller], job) {
                    (Ok(jobs), Ok(job)) => jobs.push(job),
                    (answer, Err(error)) => *answer = Err(error),
                    (Err(_), Ok(_)) => {}
                }
            }
        }
    }
    for (request, answer) in group.into_iter().zip(answers) {
        let _ = request.reply.send(answer);
    }
}

async fn complete_batch(shared: &Shared, batch: Vec<CompleteRequest>) {
    // A job twice in one statement would be updated once; later copies go in later rounds.
    let mut rounds: Vec<Vec<CompleteRequest>> = Vec::new();
    for request in batch {
        match rounds
            .iter_mut()
            .find(|round| round.iter().all(|r| r.id != request.id))
        {
            Some(round) => round.push(request),
            None => rounds.push(vec![request]),
        }
    }
    for round in rounds {
        complete_round(shared, round).await;
    }
}

/// Completes jobs of distinct ids in one statement.
async fn complete_round(shared: &Shared, round: Vec<CompleteRequest>) {
    let ids: Vec<i64> = round.iter().map(|r| r.id).collect();
    let owners: Vec<&str> = round.iter().map(|r| r.owner.as_str()).collect();
    let tokens: Vec<i64> = round.iter().map(|r| r.token).collect();
    let results: Vec<&str> = round.iter().map(|r| r.result.as_str()).collect();
    let rows = sqlx::query(shared.sql.complete.clone())
        .bind(&ids)
        .bind(&owners)
        .bind(&tokens)
        .bind(&results)
        .bind(r#"{"outcome":"succeeded"}"#)
        .bind(shared.origin)
        .fetch_all(&shared.pool)
        .await;
    match rows {
        Err(error) => {
            for request in round {
                let _ = request.reply.send(Err(shared_error(&error)));
            }
        }
        Ok(rows) => {
            let mut done: HashMap<i64, Result<Job>> = HashMap::with_capacity(rows.len());
            for row in &rows {
                if let Ok(id) = row.try_get::<i64, _>("id") {
                    done.insert(id, decode_job(row));
                }
            }
            for request in round {
                let answer = done.remove(&request.id).transpose();
                let _ = request.reply.send(answer);
            }
        }
    }
}

/// Inserts the jobs of several single-job enqueues in one statement.
async fn enqueue_batch(shared: &Shared, batch: Vec<EnqueueRequest>) {
    let jobs: Vec<&NewJob> = batch.iter().map(|request| &request.job).collect();
    match crate::queue::insert_jobs(shared, &jobs).await {
        Ok(ids) => {
            for (request, id) in batch.into_iter().zip(ids) {
                let _ = request.reply.send(Ok(id));
            }
        }
        Err(error) => {
            let (message, transient) = match &error {
                Error::Backend {
                    message, transient, ..
                } => (message.clone(), *transient),
                other => (other.to_string(), false),
            };
            for request in batch {
                let _ = request.reply.send(Err(Error::Backend {
                    message: message.clone(),
                    transient,
                    source: None,
                }));
            }
        }
    }
}
