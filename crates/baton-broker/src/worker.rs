//! The worker library: runs jobs of one queue with a handler, as many at once as asked.
//!
//! Each slot of concurrency is one REQ connection that says `ready`, runs the job it is given,
//! and answers with `completed` (which is also its next `ready`). While a job runs, a DEALER
//! connection sends `touch` at a third of the job's timeout, so a long job is not taken back,
//! and hears whether the job was canceled. A slot that hears nothing for the reply timeout
//! opens a new connection and says `ready` again: that is how it finds a restarted broker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_core::TraceParent;
use baton_zmq::{Dealer, Requester};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

/// A job handed to the handler.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job's id.
    pub id: String,
    /// The lease's fencing token: pass it to anything the job writes, so that a job taken back
    /// after a timeout cannot overwrite its successor's writes.
    pub token: Option<u64>,
    /// The attempt, counting from 1.
    pub attempt: u64,
    /// How long the job may run between touches.
    pub timeout: Duration,
    /// The whole job message (`target`, `method`, `parameters`, …).
    pub job: Value,
    canceled: watch::Receiver<bool>,
}

impl JobContext {
    /// The job's `parameters`, or null.
    pub fn parameters(&self) -> &Value {
        self.job.get("parameters").unwrap_or(&Value::Null)
    }

    /// Whether the job was canceled (heard at its last touch).
    pub fn is_canceled(&self) -> bool {
        *self.canceled.borrow()
    }

    /// Completes when the job is canceled.
    pub async fn canceled(&self) {
        let mut canceled = self.canceled.clone();
        let _ = canceled.wait_for(|canceled| *canceled).await;
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It succeeded with this result.
    Success(Value),
    /// It failed with this error; it runs again if its retry policy allows.
    Failure(Value),
    /// It failed for good: no retry.
    Fatal(Value),
}

/// A worker for one queue of one broker.
#[derive(Clone, Debug)]
pub struct Worker {
    endpoint: String,
    queue: String,
    name: String,
    concurrency: usize,
    reply_timeout: Duration,
}

impl Worker {
    /// A worker of `queue` at the broker's `endpoint`: one job at a time, named
    /// `baton:<host>:<pid>`.
    pub fn new(endpoint: impl Into<String>, queue: impl Into<String>) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
        Self {
            endpoint: endpoint.into(),
            queue: queue.into(),
            name: format!("baton:{host}:{}", std::process::id()),
            concurrency: 1,
            reply_timeout: Duration::from_secs(30),
        }
    }

    /// Runs up to `n` jobs at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the worker's name (each slot adds `:<slot>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long a waiting slot hears nothing before it reconnects (the broker pings waiting
    /// workers well within the default 30 s).
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Runs jobs with `handler` until the broker sends `quit`, or SIGINT or SIGTERM arrives
    /// (then running jobs finish and waiting slots say goodbye).
    pub async fn run<F, Fut>(self, handler: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handle = self.spawn(handler);
        let stop = handle.stop.clone();
        tokio::select! {
            () = shutdown_signal() => {
                let _ = stop.send(true);
                handle.wait().await;
            }
            () = handle.wait_ref() => {}
        }
    }

    /// Starts the worker in the background.
    pub fn spawn<F, Fut>(self, handler: F) -> WorkerHandle
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let (stop, stopped) = watch::channel(false);
        let mut slots = JoinSet::new();
        for slot in 0..self.concurrency {
            let name = format!("{}:{slot}", self.name);
            slots.spawn(run_slot(
                self.clone(),
                name,
                handler.clone(),
                stopped.clone(),
            ));
        }
        let (done_tx, done) = watch::channel(false);
        tokio::spawn(async move {
            while slots.join_next().await.is_some() {}
            let _ = done_tx.send(true);
        });
        WorkerHandle { stop, done }
    }
}

/// A worker running in the background.
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl WorkerHandle {
    /// Stops gracefully: running jobs finish and are reported, waiting slots say goodbye.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.wait().await;
    }

    /// Waits until every slot has stopped (after `quit`, or [`stop`](Self::stop)).
    pub async fn wait(self) {
        self.wait_ref().await;
    }

    async fn wait_ref(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }
}

async fn run_slot<F, Fut>(
    worker: Worker,
    name: String,
    handler: Arc<F>,
    mut stopped: watch::Receiver<bool>,
) where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut requester = Requester::new(worker.endpoint.clone());
    let ready = json!({"command": "ready", "queue": worker.queue, "worker_name": name});
    let mut next = ready.clone();
    loop {
        if *stopped.borrow() {
            break;
        }
        let reply = tokio::select! {
            reply = requester.request(Bytes::from(next.to_string()), Some(worker.reply_timeout)) => reply,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let message: Value = match reply {
            Ok(body) => serde_json::from_slice(&body).unwrap_or(Value::Null),
            Err(error) => {
                tracing::debug!(slot = %name, %error, "no word from the broker; reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
                next = ready.clone();
                continue;
            }
        };
        match message["command"].as_str() {
            Some("job") => {
                let (outcome, context) = run_job(&worker, &handler, message).await;
                let (status, result, retry) = match outcome {
                    Outcome::Success(result) => ("success", result, true),
                    Outcome::Failure(error) => ("error", error, true),
                    Outcome::Fatal(error) => ("error", error, false),
                };
                let stopping = *stopped.borrow();
                let completed = json!({
                    "command": "completed",
                    "job_id": context.id,
                    "token": context.token,
                    "status": status,
                    "result": result,
                    "retry": retry,
                    "ready": !stopping,
                });
                if stopping {
                    let _ = requester
                        .request(
                            Bytes::from(completed.to_string()),
                            Some(worker.reply_timeout),
                        )
                        .await;
                    return;
                }
                next = completed;
            }
            Some("idle") => {
                next = json!({
                    "command": "completed",
                    "job_id": message["job_id"],
                    "result": "idle, doing nothing",
                    "status": "success",
                    "ready": true,
                });
            }
            Some("quit") => return,
            _ => {
                // An error (the broker restarted and does not know this slot): start over.
                tracing::debug!(slot = %name, reply = %message, "unexpected reply; saying ready again");
                next = ready.clone();
            }
        }
    }
    // Stopped while waiting for a job: leave from a new connection, as the broker expects.
    let mut goodbye = Requester::new(worker.endpoint.clone());
    let _ = goodbye
        .request(
            Bytes::from(json!({"command": "goodbye", "worker_name": name}).to_string()),
            Some(Duration::from_secs(1)),
        )
        .await;
}

/// Runs one job, touching it at a third of its timeout until it ends.
async fn run_job<F, Fut>(worker: &Worker, handler: &Arc<F>, job: Value) -> (Outcome, JobContext)
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let timeout = job["timeout"]
        .as_f64()
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64);
    let (cancel, canceled) = watch::channel(false);
    let context = JobContext {
        id: job["job_id"].as_str().unwrap_or_default().to_owned(),
        token: job["token"].as_u64(),
        attempt: job["attempt"].as_u64().unwrap_or(1),
        timeout,
        job,
        canceled,
    };
    let parent = context.job["traceparent"]
        .as_str()
        .and_then(|parent| TraceParent::parse(parent).ok());
    let span = baton_trace::execution_span(
        &context.id,
        &worker.queue,
        u32::try_from(context.attempt).unwrap_or(u32::MAX),
        parent.as_ref(),
    );
    let run = tokio::spawn(handler(context.clone()).instrument(span.clone()));
    let touching = touch_until_done(worker.endpoint.clone(), &context, cancel);
    tokio::pin!(run);
    let outcome = tokio::select! {
        outcome = &mut run => outcome,
        () = touching => run.await,
    };
    let outcome = outcome.unwrap_or_else(|error| {
        Outcome::Failure(json!({"class": "panic", "message": error.to_string()}))
    });
    if !matches!(outcome, Outcome::Success(_)) {
        span.record("otel.status_code", "ERROR");
    }
    (outcome, context)
}

/// Sends `touch` at a third of the job's timeout for ever; marks the job canceled when the
/// broker says so.
async fn touch_until_done(endpoint: String, context: &JobContext, cancel: watch::Sender<bool>) {
    let interval = (context.timeout / 3).max(Duration::from_millis(50));
    let mut dealer = None;
    loop {
        tokio::time::sleep(interval).await;
        if dealer.is_none() {
            dealer = Dealer::connect(&endpoint).await.ok();
        }
        let Some(socket) = &mut dealer else {
            continue;
        };
        let touch = json!({
            "command": "touch",
            "job_id": context.id,
            "token": context.token,
            "timeout": context.timeout.as_secs_f64(),
        });
        if socket.send(Bytes::from(touch.to_string())).await.is_err() {
            dealer = None;
            continue;
        }
        if let Ok(reply) = socket.receive(interval).await
            && let Ok(reply) = serde_json::from_slice::<Value>(&reply)
            && reply["canceled"] == true
        {
            let _ = cancel.send(true);
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
