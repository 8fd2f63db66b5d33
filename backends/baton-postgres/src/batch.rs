//! Group commit: concurrent `reserve`, `complete` and `enqueue` calls of one backend share
//! statements.
//!
//! Each call is handed to a batching task through a channel and answered through a oneshot.
//! A task takes every request queued while the previous batch ran (up to [`MAX_SLOTS`] jobs),
//! waits a moment for the callers of the previous batch to come back (see [`Gather`]), and runs
//! them as one statement, so one commit (one fsync) serves many callers. Reservations
//! and completions share one task and, when a batch has both, one statement: a worker that
//! completes a job and reserves the next costs one commit, not two. Fencing stays per job:
//! every row of a batched completion is checked against its own lease, and a caller whose row
//! did not match gets `LeaseLost`. Every commit that notifies takes PostgreSQL's global notify
//! lock until its WAL is flushed, so more tasks ([`JOB_TASKS`]) would only queue on that lock
//! with smaller batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{Error, Job, NewJob, QueueName, Result};
use baton_sql::is_transient;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::queue::decode_job;
use crate::sql::Statements;

/// The most jobs one batch reserves or completes.
const MAX_SLOTS: usize = 1000;
/// Batching tasks for reservations and completions (see the module documentation).
const JOB_TASKS: usize = 1;
/// How long a batch waits at most for the callers of the last one (see [`Gather`]).
const GATHER: Duration = Duration::from_micros(200);
/// Batches that go without waiting after a wait ran out (see [`Gather`]).
const GATHER_BACKOFF: u32 = 64;

/// What the batching tasks need: no handle back to the backend, so they end when it is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) sql: Arc<Statements>,
    pub(crate) origin: i64,
    /// Counts reserved jobs towards the next vacuum.
    pub(crate) reserved: Arc<crate::vacuum::Reserved>,
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

/// The receiving ends of the reservation and completion channels, taken together.
struct JobReceivers {
    reserve: mpsc::UnboundedReceiver<ReserveRequest>,
    complete: mpsc::UnboundedReceiver<CompleteRequest>,
    gather: Gather,
}

impl Batchers {
    /// Starts the batching tasks; they stop once these senders are dropped.
    pub(crate) fn spawn(shared: &Shared) -> Self {
        let (reserve, reserve_rx) = mpsc::unbounded_channel();
        let (complete, complete_rx) = mpsc::unbounded_channel();
        let (enqueue, mut enqueue_rx) = mpsc::unbounded_channel();
        let jobs_rx = Arc::new(Mutex::new(JobReceivers {
            reserve: reserve_rx,
            complete: complete_rx,
            gather: Gather::default(),
        }));
        for _ in 0..JOB_TASKS {
            let (shared, rx) = (shared.clone(), jobs_rx.clone());
            tokio::spawn(async move {
                while let Some((reserves, completes)) = next_job_batch(&rx).await {
                    job_batch(&shared, reserves, completes).await;
                }
            });
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut enqueue_rx, |_| 1).await {
                enqueue_batch(&shared, batch).await;
            }
        });
        Self {
            reserve,
            complete,
            enqueue,
        }
    }
}

/// The next batch: waits for one request, then takes those already queued up to the limit.
async fn next_batch<R>(
    receiver: &mut mpsc::UnboundedReceiver<R>,
    weight: impl Fn(&R) -> usize,
) -> Option<Vec<R>> {
    let first = receiver.recv().await?;
    let mut total = weight(&first);
    let mut batch = vec![first];
    take_queued(receiver, &mut batch, &mut total, weight);
    Some(batch)
}

/// Moves requests already queued into `batch` while it weighs less than [`MAX_SLOTS`].
fn take_queued<R>(
    receiver: &mut mpsc::UnboundedReceiver<R>,
    batch: &mut Vec<R>,
    total: &mut usize,
    weight: impl Fn(&R) -> usize,
) {
    while *total < MAX_SLOTS {
        let Ok(next) = receiver.try_recv() else {
            break;
        };
        *total += weight(&next);
        batch.push(next);
    }
}

/// The next reservations and completions: those already queued, or else the first of either
/// to arrive and any queued with it; then, unless [`Gather`] says otherwise, those of the
/// callers of the last batch that come back within [`GATHER`]. At most [`MAX_SLOTS`] jobs of
/// each kind. `None` once the senders are gone.
async fn next_job_batch(
    receivers: &Mutex<JobReceivers>,
) -> Option<(Vec<ReserveRequest>, Vec<CompleteRequest>)> {
    let mut receivers = receivers.lock().await;
    let receivers = &mut *receivers;
    let mut batch = JobBatch::default();
    batch.take_queued(receivers);
    let waiting = batch.len();
    if waiting == 0 {
        tokio::select! {
            request = receivers.reserve.recv() => {
                let request = request?;
                batch.reserved += request.max;
                batch.reserves.push(request);
            }
            request = receivers.complete.recv() => {
                batch.completes.push(request?);
            }
        }
        batch.take_queued(receivers);
    }
    if let Some(target) = receivers.gather.target(waiting) {
        let deadline = Instant::now() + GATHER;
        let mut ran_out = false;
        while batch.len() < target && !batch.full() {
            if Instant::now() >= deadline {
                ran_out = true;
                break;
            }
            tokio::task::yield_now().await;
            batch.take_queued(receivers);
        }
        receivers.gather.ran_out(ran_out);
    }
    receivers.gather.last = batch.len();
    Some((batch.reserves, batch.completes))
}

/// The requests of the batch being gathered.
#[derive(Default)]
struct JobBatch {
    reserves: Vec<ReserveRequest>,
    completes: Vec<CompleteRequest>,
    /// The jobs the reservations ask for.
    reserved: usize,
}

impl JobBatch {
    /// Moves the requests already queued into the batch, up to [`MAX_SLOTS`] jobs of each kind.
    fn take_queued(&mut self, receivers: &mut JobReceivers) {
        take_queued(
            &mut receivers.reserve,
            &mut self.reserves,
            &mut self.reserved,
            |r| r.max,
        );
        let mut completed = self.completes.len();
        take_queued(
            &mut receivers.complete,
            &mut self.completes,
            &mut completed,
            |_| 1,
        );
    }

    fn len(&self) -> usize {
        self.reserves.len() + self.completes.len()
    }

    /// Whether either kind reached [`MAX_SLOTS`] jobs.
    fn full(&self) -> bool {
        self.reserved >= MAX_SLOTS || self.completes.len() >= MAX_SLOTS
    }
}

/// Whether a batch waits for the callers of the last one to come back, and for how many.
///
/// Workers that reserve, run a short job and complete it while their batch's statement runs
/// otherwise split into two cohorts that take turns: the callers answered by one statement come
/// back while the next, holding the others, already runs, and every statement serves half of
/// them. Waiting a moment for the last batch's callers merges the cohorts: one statement
/// (and one commit) for all of them. When they do not come back within [`GATHER`] (their jobs
/// take longer, or load is light) twice in a row, the next [`GATHER_BACKOFF`] batches go
/// without waiting.
#[derive(Debug, Default)]
struct Gather {
    /// Requests in the last batch.
    last: usize,
    /// Batches still to go without waiting.
    skip: u32,
    /// Whether the last wait ran out.
    timed_out: bool,
}

impl Gather {
    /// How many requests this batch waits for, with `waiting` queued before it began; `None`
    /// for none.
    fn target(&mut self, waiting: usize) -> Option<usize> {
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        Some(self.last + waiting)
    }

    /// This batch's wait ran out, or not (`false`), before its callers came back.
    fn ran_out(&mut self, ran_out: bool) {
        if ran_out && self.timed_out {
            self.skip = GATHER_BACKOFF;
        }
        self.timed_out = ran_out;
    }
}

/// A failure of a whole batch, as each of its callers sees it.
fn shared_error(error: &sqlx::Error) -> Error {
    Error::Backend {
        message: error.to_string(),
        transient: is_transient(error),
        source: None,
    }
}

/// Runs a batch of reservations and completions: the first group of reservations for the same
/// queues and the first round of completions share one statement (one commit); any others,
/// rare under load, run after it on their own.
async fn job_batch(
    shared: &Shared,
    reserves: Vec<ReserveRequest>,
    completes: Vec<CompleteRequest>,
) {
    let mut groups: Vec<Vec<ReserveRequest>> = Vec::new();
    for request in reserves {
        match groups.iter_mut().find(|g| g[0].queues == request.queues) {
            Some(group) => group.push(request),
            None => groups.push(vec![request]),
        }
    }
    // A job twice in one statement would be updated once; later copies go in later rounds.
    let mut rounds: Vec<Vec<CompleteRequest>> = Vec::new();
    for request in completes {
        match rounds
            .iter_mut()
            .find(|round| round.iter().all(|r| r.id != request.id))
        {
            Some(round) => round.push(request),
            None => rounds.push(vec![request]),
        }
    }
    let mut groups = groups.into_iter();
    let mut rounds = rounds.into_iter();
    match (rounds.next(), groups.next()) {
        (Some(round), Some(group)) => complete_and_reserve(shared, round, group).await,
        (Some(round), None) => complete_round(shared, round).await,
        (None, Some(group)) => reserve_group(shared, group).await,
        (None, None) => {}
    }
    for round in rounds {
        complete_round(shared, round).await;
    }
    for group in groups {
        reserve_group(shared, group).await;
    }
}

/// The outcome object a completion ends its attempt with.
const SUCCEEDED: &str = r#"{"outcome":"succeeded"}"#;

/// A group's reservation slots, one per job asked for: slot `rn - 1` of the statement goes to
/// the owner, TTL and caller at that index.
struct Slots<'a> {
    owners: Vec<&'a str>,
    ttls: Vec<i64>,
    callers: Vec<usize>,
}

impl<'a> Slots<'a> {
    fn of(group: &'a [ReserveRequest]) -> Self {
        let mut slots = Slots {
            owners: Vec::new(),
            ttls: Vec::new(),
            callers: Vec::new(),
        };
        for (caller, request) in group.iter().enumerate() {
            for _ in 0..request.max {
                slots.owners.push(&request.owner);
                slots.ttls.push(request.ttl_ms);
                slots.callers.push(caller);
            }
        }
        slots
    }
}

/// A round's completions as the statement's arrays.
struct Completions<'a> {
    ids: Vec<i64>,
    owners: Vec<&'a str>,
    tokens: Vec<i64>,
    results: Vec<&'a str>,
}

impl<'a> Completions<'a> {
    fn of(round: &'a [CompleteRequest]) -> Self {
        Completions {
            ids: round.iter().map(|r| r.id).collect(),
            owners: round.iter().map(|r| r.owner.as_str()).collect(),
            tokens: round.iter().map(|r| r.token).collect(),
            results: round.iter().map(|r| r.result.as_str()).collect(),
        }
    }
}

/// Binds `$1`: the one queue's name, or the array of names.
fn bind_queues<'q>(
    query: Query<'q, Postgres, PgArguments>,
    queues: &'q [QueueName],
) -> Query<'q, Postgres, PgArguments> {
    if let [queue] = queues {
        query.bind(queue.as_str())
    } else {
        query.bind(queues.iter().map(QueueName::as_str).collect::<Vec<_>>())
    }
}

/// Reserves for callers asking for the same queues, in one statement.
async fn reserve_group(shared: &Shared, group: Vec<ReserveRequest>) {
    let queues = &group[0].queues;
    let slots = Slots::of(&group);
    let rows = bind_queues(
        sqlx::query(shared.sql.reserve(queues.len() != 1, slots.owners.len())),
        queues,
    )
    .bind(&slots.owners)
    .bind(&slots.ttls)
    .bind(shared.origin)
    .fetch_all(&shared.pool)
    .await;
    if let Ok(rows) = &rows {
        shared.reserved.add(rows.len());
    }
    let callers = slots.callers;
    answer_reservations(group, &callers, rows.as_deref());
}

/// Completes jobs of distinct ids in one statement.
async fn complete_round(shared: &Shared, round: Vec<CompleteRequest>) {
    let done = Completions::of(&round);
    let rows = sqlx::query(shared.sql.complete.clone())
        .bind(&done.ids)
        .bind(&done.owners)
        .bind(&done.tokens)
        .bind(&done.results)
        .bind(SUCCEEDED)
        .bind(shared.origin)
        .fetch_all(&shared.pool)
        .await;
    answer_completions(round, rows.as_deref());
}

/// Completes a round and reserves for a group in one statement, so in one commit.
async fn complete_and_reserve(
    shared: &Shared,
    round: Vec<CompleteRequest>,
    group: Vec<ReserveRequest>,
) {
    let queues = &group[0].queues;
    let slots = Slots::of(&group);
    let done = Completions::of(&round);
    let rows = bind_queues(
        sqlx::query(
            shared
                .sql
                .complete_and_reserve(queues.len() != 1, slots.owners.len()),
        ),
        queues,
    )
    .bind(&slots.owners)
    .bind(&slots.ttls)
    .bind(shared.origin)
    .bind(&done.ids)
    .bind(&done.owners)
    .bind(&done.tokens)
    .bind(&done.results)
    .bind(SUCCEEDED)
    .fetch_all(&shared.pool)
    .await;
    let callers = slots.callers;
    match rows {
        Err(error) => {
            answer_completions(round, Err(&error));
            answer_reservations(group, &callers, Err(&error));
        }
        Ok(rows) => {
            // Completed rows have no reservation slot.
            let (reserved, completed): (Vec<PgRow>, Vec<PgRow>) = rows
                .into_iter()
                .partition(|row| matches!(row.try_get::<Option<i32>, _>("rn"), Ok(Some(_))));
            shared.reserved.add(reserved.len());
            answer_completions(round, Ok(&completed));
            answer_reservations(group, &callers, Ok(&reserved));
        }
    }
}

/// Answers each caller of a group with the jobs of its slots, in slot order.
fn answer_reservations(
    group: Vec<ReserveRequest>,
    callers: &[usize],
    rows: std::result::Result<&[PgRow], &sqlx::Error>,
) {
    let mut answers: Vec<Result<Vec<Job>>> = group.iter().map(|_| Ok(Vec::new())).collect();
    match rows {
        Err(error) => {
            for answer in &mut answers {
                *answer = Err(shared_error(error));
            }
        }
        Ok(rows) => {
            for row in rows {
                let slot = row
                    .try_get::<i32, _>("rn")
                    .ok()
                    .and_then(|rn| usize::try_from(rn - 1).ok())
                    .and_then(|slot| callers.get(slot).copied());
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

/// Answers each completion with its job, or `None` if its row was not updated (its lease was
/// not current).
fn answer_completions(
    round: Vec<CompleteRequest>,
    rows: std::result::Result<&[PgRow], &sqlx::Error>,
) {
    match rows {
        Err(error) => {
            for request in round {
                let _ = request.reply.send(Err(shared_error(error)));
            }
        }
        Ok(rows) => {
            let mut done: HashMap<i64, Result<Job>> = HashMap::with_capacity(rows.len());
            for row in rows {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waits_for_the_last_batch_and_the_queued_requests() {
        let mut gather = Gather {
            last: 32,
            ..Gather::default()
        };
        assert_eq!(gather.target(32), Some(64));
        gather.ran_out(false);
        gather.last = 64;
        assert_eq!(gather.target(0), Some(64));
    }

    #[test]
    fn two_waits_in_a_row_that_ran_out_stop_the_waiting_for_a_while() {
        let mut gather = Gather {
            last: 4,
            ..Gather::default()
        };
        assert!(gather.target(0).is_some());
        gather.ran_out(true);
        assert!(
            gather.target(0).is_some(),
            "one wait that ran out is forgiven"
        );
        gather.ran_out(false);
        assert!(gather.target(0).is_some());
        gather.ran_out(true);
        assert!(gather.target(0).is_some());
        gather.ran_out(true);
        for _ in 0..GATHER_BACKOFF {
            assert_eq!(gather.target(0), None);
        }
        assert!(
            gather.target(0).is_some(),
            "waiting resumes after the backoff"
        );
    }
}
