//! Group calls: concurrent `reserve` and `complete` calls share one script call each, so that
//! many workers cost the server one script run instead of one per worker.
//!
//! Each kind has a task that takes a request, adds every request that arrived meanwhile (up to a
//! limit), runs one script for all of them and answers each caller. While a script runs, the
//! next batch gathers; at most two batches of a kind are on the wire at once.

use baton_core::{Error, Job, JobLease, Owner, QueueName, Result, Timestamp};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::Value;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::keys::Keys;
use crate::scripts::Scripts;
use crate::{from_redis, unexpected, value};

/// The most requests one script call carries.
const MAX_REQUESTS: usize = 256;
/// Batches of one kind on the wire at once: the next is sent while the server runs the last,
/// so that the server never waits for the client between two.
const IN_FLIGHT: usize = 2;
/// Scheduled jobs a reservation promotes per queue per script call.
pub(crate) const PROMOTE_CHUNK: usize = 500;

/// What the batching tasks need.
pub(crate) struct Shared {
    pub(crate) connection: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) scripts: Arc<Scripts>,
    /// This backend's origin in messages.
    pub(crate) origin: String,
}

/// A `reserve` call waiting for its batch.
pub(crate) struct ReserveRequest {
    pub(crate) queues: Vec<QueueName>,
    pub(crate) owner: Owner,
    pub(crate) ttl_ms: i64,
    pub(crate) max: usize,
    pub(crate) reply: oneshot::Sender<Result<Vec<Job>>>,
}

/// A `complete` call waiting for its batch; it is answered `None` when its lease is not current.
pub(crate) struct CompleteRequest {
    pub(crate) lease: JobLease,
    pub(crate) result: String,
    /// Whether the caller holds the running job (see [`crate::running`]): the script then
    /// answers only when it finished the job, not the job.
    pub(crate) brief: bool,
    pub(crate) reply: oneshot::Sender<Result<Option<Completion>>>,
}

/// What a completion's script answered.
pub(crate) enum Completion {
    /// The finished job, read back (boxed: it is large beside a timestamp).
    Job(Box<Job>),
    /// When the job finished, by the server's clock, for a brief request.
    At(Timestamp),
}

/// The senders to the batching tasks; dropping them ends the tasks.
pub(crate) struct Batchers {
    pub(crate) reserve: mpsc::UnboundedSender<ReserveRequest>,
    pub(crate) complete: mpsc::UnboundedSender<CompleteRequest>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Batchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Batchers {
    pub(crate) fn spawn(shared: &Shared) -> Self {
        let (reserve, reserve_rx) = mpsc::unbounded_channel();
        let (complete, complete_rx) = mpsc::unbounded_channel();
        let tasks = [
            tokio::spawn(run(shared.clone_parts(), reserve_rx, reserve_batch)),
            tokio::spawn(run(shared.clone_parts(), complete_rx, complete_batch)),
        ];
        Self {
            reserve,
            complete,
            tasks,
        }
    }
}

impl Shared {
    fn clone_parts(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            keys: self.keys.clone(),
            scripts: self.scripts.clone(),
            origin: self.origin.clone(),
        }
    }
}

/// A copy of a batch's error for each of its callers.
fn copy_error(error: &Error) -> Error {
    Error::Backend {
        message: error.to_string(),
        transient: error.is_retryable(),
        source: None,
    }
}

async fn run<R, F, Fut>(shared: Shared, mut receiver: mpsc::UnboundedReceiver<R>, batch: F)
where
    R: Send + 'static,
    F: Fn(Shared, Vec<R>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // The scripts on the wire run in this task, not in tasks of their own: a reply then wakes
    // no other task before its callers are answered.
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            request = receiver.recv(), if in_flight.len() < IN_FLIGHT => {
                let Some(first) = request else { break };
                let mut requests = vec![first];
                while requests.len() < MAX_REQUESTS {
                    match receiver.try_recv() {
                        Ok(request) => requests.push(request),
                        Err(_) => break,
                    }
                }
                in_flight.push(batch(shared.clone_parts(), requests));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// The arguments every job script starts with, after its one key.
pub(crate) fn job_invocation<'a>(
    script: &'a redis::Script,
    keys: &Keys,
    origin: &str,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(keys.job_seq());
    invocation
        .arg(&keys.jobs)
        .arg(origin)
        .arg(&keys.events_channel)
        .arg(&keys.wake_channel);
    invocation
}

async fn reserve_batch(shared: Shared, requests: Vec<ReserveRequest>) {
    let mut invocation = job_invocation(&shared.scripts.reserve, &shared.keys, &shared.origin);
    invocation.arg(PROMOTE_CHUNK).arg(requests.len());
    for request in &requests {
        invocation
            .arg(request.owner.as_str())
            .arg(request.ttl_ms)
            .arg(request.max)
            .arg(request.queues.len());
        for queue in &request.queues {
            invocation.arg(queue.as_str());
        }
    }
    let reply: Result<Vec<Value>> = async {
        let reply: Value = invocation
            .invoke_async(&mut shared.connection.clone())
            .await
            .map_err(from_redis)?;
        value::array(reply)
    }
    .await;
    match reply {
        Ok(per_request) if per_request.len() == requests.len() => {
            for (request, jobs) in requests.into_iter().zip(per_request) {
                let jobs = value::array(jobs).and_then(|views| {
                    views
                        .into_iter()
                        .map(value::some_job)
                        .collect::<Result<Vec<_>>>()
                });
                let _ = request.reply.send(jobs);
            }
        }
        Ok(_) => {
            for request in requests {
                let _ = request
                    .reply
                    .send(Err(unexpected("reserve reply of the wrong length")));
            }
        }
        Err(error) => {
            for request in requests {
                let _ = request.reply.send(Err(copy_error(&error)));
            }
        }
    }
}

async fn complete_batch(shared: Shared, requests: Vec<CompleteRequest>) {
    let mut invocation = job_invocation(&shared.scripts.complete, &shared.keys, &shared.origin);
    invocation.arg(requests.len());
    for request in &requests {
        invocation
            .arg(request.lease.job.get())
            .arg(request.lease.lease.owner().as_str())
            .arg(request.lease.lease.token().get())
            .arg(&request.result)
            .arg(if request.brief { "1" } else { "0" });
    }
    let reply: Result<Vec<Value>> = async {
        let reply: Value = invocation
            .invoke_async(&mut shared.connection.clone())
            .await
            .map_err(from_redis)?;
        value::array(reply)
    }
    .await;
    match reply {
        Ok(per_request) if per_request.len() == requests.len() => {
            for (request, outcome) in requests.into_iter().zip(per_request) {
                let job = value::status(outcome).and_then(|(status, mut rest)| {
                    if status == "ok" {
                        let answer = rest.next().ok_or_else(|| unexpected("complete reply"))?;
                        if request.brief {
                            let at = Timestamp::from_millis(value::int(answer)?);
                            Ok(Some(Completion::At(at)))
                        } else {
                            value::some_job(answer).map(|job| Some(Completion::Job(Box::new(job))))
                        }
                    } else {
                        Ok(None)
                    }
                });
                let _ = request.reply.send(job);
            }
        }
        Ok(_) => {
            for request in requests {
                let _ = request
                    .reply
                    .send(Err(unexpected("complete reply of the wrong length")));
            }
        }
        Err(error) => {
            for request in requests {
                let _ = request.reply.send(Err(copy_error(&error)));
            }
        }
    }
}
