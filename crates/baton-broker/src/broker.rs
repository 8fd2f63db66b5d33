//! The broker: one task owns every worker's and request's state; backend calls run as their
//! own tasks and report back, so a slow store never stalls the socket, and concurrent calls
//! reach the backend together (where backends combine them into one statement or script).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::{
    Backend, Error, Job, JobId, JobLease, JobState, Lease, Owner, QueueName, Reserved, Retry,
    Timestamp,
};
use baton_zmq::{Incoming, PeerId, Publisher, Router, RouterLimits};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::BrokerConfig;
use crate::protocol::{
    self, Completion, Enqueue, JobRef, Request, error_reply, job_json, job_message, status_string,
};
use crate::roster::{WorkerActivity, WorkerInfo};

/// How long a stopping broker keeps answering workers with `quit`.
const LINGER: Duration = Duration::from_millis(500);

/// What a broker has done since it started.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Jobs handed to workers.
    pub dispatched: AtomicU64,
    /// Completions (success or failure) the backend accepted.
    pub completed: AtomicU64,
    /// Completions refused because the worker's lease was no longer current (a late worker).
    pub rejected_completions: AtomicU64,
    /// Messages refused as malformed.
    pub malformed: AtomicU64,
    /// Replies dropped because the peer did not read them or was gone.
    pub dropped_replies: AtomicU64,
    /// Workers dropped because they vanished, did not answer a ping, or were replaced.
    pub workers_lost: AtomicU64,
}

impl BrokerStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A running broker.
pub struct BrokerHandle {
    endpoint: String,
    publish_endpoint: Option<String>,
    stats: Arc<BrokerStats>,
    stop: watch::Sender<bool>,
    events: mpsc::UnboundedSender<Event>,
    task: JoinHandle<baton_core::Result<()>>,
}

impl BrokerHandle {
    /// The ROUTER endpoint, with the port filled in.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The PUB endpoint, if one is bound.
    pub fn publish_endpoint(&self) -> Option<&str> {
        self.publish_endpoint.as_deref()
    }

    /// What the broker has done.
    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }

    /// The workers connected now, by queue then name; empty once the broker stopped.
    pub async fn workers(&self) -> Vec<WorkerInfo> {
        self.roster().workers().await
    }

    /// A handle that reads the connected workers, which may outlive this one.
    pub fn roster(&self) -> Roster {
        Roster {
            events: self.events.clone(),
        }
    }

    /// Stops the broker gracefully: waiting workers are sent `quit`, running jobs are left to
    /// their leases (they run again elsewhere once their timeout passes), nothing is lost.
    ///
    /// # Errors
    ///
    /// What stopped the broker, if it failed.
    pub async fn shutdown(self) -> baton_core::Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Stops the broker at once, as a crash would: no `quit` to workers, which find the next
    /// broker at the same endpoint by themselves; leased jobs run again after their timeout.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits until the broker stops (after a `quit`, or a failure).
    ///
    /// # Errors
    ///
    /// What stopped the broker, if it failed.
    pub async fn wait(self) -> baton_core::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(Error::Backend {
                message: format!("the broker task failed: {error}"),
                transient: false,
                source: None,
            }),
        }
    }
}

/// Reads a broker's connected workers ([`BrokerHandle::roster`]); cheap to clone.
#[derive(Clone)]
pub struct Roster {
    events: mpsc::UnboundedSender<Event>,
}

impl Roster {
    /// The workers connected now, by queue then name; empty once the broker stopped.
    pub async fn workers(&self) -> Vec<WorkerInfo> {
        let (reply, answer) = oneshot::channel();
        if self.events.send(Event::Roster(reply)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

/// Starts a broker on `backend`.
///
/// # Errors
///
/// `InvalidInput` for bad settings; `Backend` if a socket cannot be bound.
pub async fn start(
    backend: Arc<dyn Backend>,
    config: BrokerConfig,
) -> baton_core::Result<BrokerHandle> {
    config.validate()?;
    let limits = RouterLimits {
        max_message_bytes: config.max_message_bytes,
        send_timeout: config.send_timeout,
        ..RouterLimits::default()
    };
    let transport = |error: baton_zmq::Error| Error::Backend {
        message: format!("broker socket: {error}"),
        transient: false,
        source: None,
    };
    let router = Router::bind(&config.endpoint, limits)
        .await
        .map_err(transport)?;
    let publisher = match &config.publish_endpoint {
        Some(endpoint) => Some(Publisher::bind(endpoint).await.map_err(transport)?),
        None => None,
    };
    let endpoint = router.endpoint().to_owned();
    let publish_endpoint = publisher.as_ref().map(|p| p.endpoint().to_owned());
    let stats = Arc::new(BrokerStats::default());
    let (stop, stopped) = watch::channel(false);
    let (events_tx, events) = mpsc::unbounded_channel();
    let owner = Owner::new(&config.name)?;
    tracing::info!(%endpoint, publish = ?publish_endpoint, "broker listening");
    let state = State {
        backend,
        owner,
        config,
        router,
        publisher,
        stats: stats.clone(),
        events_tx: events_tx.clone(),
        workers: HashMap::new(),
        idle: HashMap::new(),
        busy: HashMap::new(),
        owed: HashMap::new(),
        notifies: HashSet::new(),
        queues: HashMap::new(),
        ping_seq: 0,
        wake_task: None,
    };
    let task = tokio::spawn(state.run(events, stopped));
    Ok(BrokerHandle {
        endpoint,
        publish_endpoint,
        stats,
        stop,
        events: events_tx,
        task,
    })
}

/// A connection that said `ready`.
struct Worker {
    queue: QueueName,
    name: Option<String>,
    state: WorkerState,
    /// When it said `ready`, and when it was last heard from (wall clock, for people).
    connected: Timestamp,
    last_seen: Timestamp,
}

impl Worker {
    fn info(&self, peer: &PeerId) -> WorkerInfo {
        let (state, job) = match &self.state {
            WorkerState::Busy { lease, .. } => (WorkerActivity::Running, Some(lease.job)),
            WorkerState::Idle { .. } | WorkerState::Pinged { .. } => {
                (WorkerActivity::Waiting, None)
            }
        };
        WorkerInfo {
            name: self.name.clone(),
            peer: peer.to_string(),
            queue: self.queue.clone(),
            state,
            job,
            connected: self.connected,
            last_seen: self.last_seen,
        }
    }
}

enum WorkerState {
    /// Waiting for a job; owes nothing.
    Idle { since: Instant },
    /// Sent an `idle` ping; must answer by `deadline`.
    Pinged { ping: String, deadline: Instant },
    /// Running a job under `lease`, with its execution timeout; `job` is the message sent.
    Busy {
        lease: JobLease,
        timeout: Duration,
        job: Value,
    },
}

/// A queue's dispatch state.
#[derive(Default)]
struct QueueState {
    /// Jobs may be due: look when a worker waits.
    ready: bool,
    /// A reservation is on its way.
    reserving: bool,
    /// Reserved jobs no worker took yet (a worker left while they were reserved).
    spare: VecDeque<Reserved>,
    /// When it was last looked at.
    looked: Option<Instant>,
}

/// What backend tasks report.
enum Event {
    Reply {
        peer: PeerId,
        body: Value,
    },
    Enqueued(QueueName, JobId),
    Reserved {
        queue: QueueName,
        result: baton_core::Result<Vec<Reserved>>,
    },
    /// A job reached a new state (boxed: jobs are large beside the other events).
    Changed(Box<Job>),
    Rejected {
        job: JobId,
        error: Error,
    },
    Touched {
        peer: PeerId,
        lease: JobLease,
    },
    Expired(Vec<JobId>),
    Woken(QueueName),
    /// A snapshot of the connected workers is asked for.
    Roster(oneshot::Sender<Vec<WorkerInfo>>),
    Stop,
}

struct State {
    backend: Arc<dyn Backend>,
    owner: Owner,
    config: BrokerConfig,
    router: Router,
    publisher: Option<Publisher>,
    stats: Arc<BrokerStats>,
    events_tx: mpsc::UnboundedSender<Event>,
    workers: HashMap<PeerId, Worker>,
    /// Waiting workers per queue, longest waiting first.
    idle: HashMap<QueueName, VecDeque<PeerId>>,
    /// Which worker runs each job.
    busy: HashMap<JobId, PeerId>,
    /// Peers owed one reply, and whether they are REQ peers (the reply needs a delimiter).
    owed: HashMap<PeerId, bool>,
    /// Clients waiting for a `notify` reply.
    notifies: HashSet<PeerId>,
    queues: HashMap<QueueName, QueueState>,
    ping_seq: u64,
    wake_task: Option<JoinHandle<()>>,
}

impl State {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stopped: watch::Receiver<bool>,
    ) -> baton_core::Result<()> {
        let tick = (self.config.poll_interval / 2).max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = Instant::now();
        loop {
            tokio::select! {
                incoming = self.router.recv() => match incoming {
                    Some(incoming) => self.on_incoming(incoming).await,
                    None => break,
                },
                Some(event) = events.recv() => {
                    if matches!(event, Event::Stop) {
                        break;
                    }
                    self.on_event(event).await;
                }
                _ = ticker.tick() => {
                    if last_expiry.elapsed() >= self.config.expiry_interval {
                        last_expiry = Instant::now();
                        self.look_for_expired();
                    }
                    self.ping_idle_workers().await;
                    self.poll_queues();
                }
                changed = stopped.changed() => {
                    if changed.is_err() || *stopped.borrow() {
                        break;
                    }
                }
            }
            self.dispatch().await;
        }
        self.quit_idle_workers().await;
        if let Some(task) = self.wake_task.take() {
            task.abort();
        }
        self.linger().await;
        tracing::info!("broker stopped");
        Ok(())
    }

    /// For a short while after stopping, answers every worker that asks for work (one that
    /// was answering a ping, or finishing a job) with `quit`, and every other request with an
    /// error, so that no peer is left waiting; this also lets the quit messages leave.
    async fn linger(&mut self) {
        let deadline = Instant::now() + LINGER;
        while let Ok(Some(incoming)) = tokio::time::timeout_at(deadline, self.router.recv()).await {
            let Incoming::Message {
                peer,
                delimited,
                body,
            } = incoming
            else {
                continue;
            };
            let reply = match protocol::decode(&body) {
                Ok(Request::Ready { .. }) => json!({"command": "quit"}),
                Ok(Request::Completed(completion)) => {
                    if let Some(WorkerState::Busy { lease, .. }) =
                        self.workers.remove(&peer).map(|worker| worker.state)
                        && completion.job_id.as_deref() == Some(&lease.job.to_string())
                    {
                        self.finish(lease, &completion);
                    }
                    if completion.ready {
                        json!({"command": "quit"})
                    } else {
                        json!({"status": "thanks"})
                    }
                }
                _ => error_reply("the broker is shutting down"),
            };
            self.send(&peer, delimited, reply).await;
        }
    }

    async fn on_incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Message {
                peer,
                delimited,
                body,
            } => {
                if delimited {
                    self.owed.insert(peer.clone(), true);
                }
                if let Some(worker) = self.workers.get_mut(&peer) {
                    worker.last_seen = wall_clock();
                }
                match protocol::decode(&body) {
                    Ok(request) => self.on_request(peer, delimited, request).await,
                    Err(error) => {
                        BrokerStats::bump(&self.stats.malformed);
                        tracing::debug!(%peer, %error, "undecodable request");
                        self.reply(&peer, delimited, error_reply(error)).await;
                    }
                }
            }
            Incoming::Malformed {
                peer,
                delimited,
                error,
            } => {
                BrokerStats::bump(&self.stats.malformed);
                tracing::debug!(%peer, %error, "malformed message");
                if delimited {
                    self.owed.insert(peer.clone(), true);
                }
                self.reply(&peer, delimited, error_reply(error)).await;
            }
            Incoming::Disconnected(peer) => {
                // Whatever it was owed has nowhere to go.
                self.owed.remove(&peer);
                self.notifies.remove(&peer);
                self.drop_worker(&peer, "its connection closed");
            }
        }
    }

    async fn on_request(&mut self, peer: PeerId, delimited: bool, request: Request) {
        match request {
            Request::Ready { queue, worker_name } => {
                if !delimited {
                    // Jobs go out as replies: only a REQ peer can wait for one.
                    self.reply(
                        &peer,
                        delimited,
                        error_reply("ready must come from a REQ socket"),
                    )
                    .await;
                    return;
                }
                if let Some(name) = &worker_name {
                    let stale: Vec<PeerId> = self
                        .workers
                        .iter()
                        .filter(|(id, worker)| {
                            **id != peer && worker.name.as_deref() == Some(name.as_str())
                        })
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in stale {
                        self.drop_worker(&id, "a new connection took its name");
                    }
                }
                if !self.admit_deferred(&peer, delimited).await {
                    return;
                }
                self.drop_worker(&peer, "it said ready again");
                let now = wall_clock();
                self.workers.insert(
                    peer.clone(),
                    Worker {
                        queue: queue.clone(),
                        name: worker_name,
                        state: WorkerState::Idle {
                            since: Instant::now(),
                        },
                        connected: now,
                        last_seen: now,
                    },
                );
                self.make_idle(&peer, &queue);
            }
            Request::Completed(completion) => self.on_completed(peer, delimited, completion).await,
            Request::Goodbye { worker_name } => {
                if let Some(name) = worker_name {
                    let leaving: Vec<PeerId> = self
                        .workers
                        .iter()
                        .filter(|(_, worker)| worker.name.as_deref() == Some(name.as_str()))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in leaving {
                        self.drop_worker(&id, "it said goodbye");
                    }
                }
                self.reply(&peer, delimited, json!({"status": "see ya later"}))
                    .await;
            }
            Request::Touch {
                job_id,
                timeout,
                token,
            } => self.on_touch(peer, job_id, timeout, token),
            Request::Enqueue(enqueue) => self.on_enqueue(peer, *enqueue),
            Request::Notify(job) => {
                if !self.admit_deferred(&peer, delimited).await {
                    return;
                }
                self.notifies.insert(peer.clone());
                self.on_notify(peer, job);
            }
            Request::Fetch(job) => {
                let backend = self.backend.clone();
                self.spawn_reply(peer, async move {
                    match fetch(&*backend, &job).await {
                        Ok(job) => json!({"status": "success", "job": job_json(&job)}),
                        Err(error) => error_reply(error),
                    }
                });
            }
            Request::Last(queue) => {
                let backend = self.backend.clone();
                self.spawn_reply(peer, async move {
                    match backend.last(&queue).await {
                        Ok(Some(job)) => json!({"status": "success", "job": job_json(&job)}),
                        Ok(None) => error_reply("no last job"),
                        Err(error) => error_reply(error),
                    }
                });
            }
            Request::Status => {
                let status = self.status();
                self.reply(&peer, delimited, status).await;
            }
            Request::Cancel(job) => {
                let backend = self.backend.clone();
                let events = self.events_tx.clone();
                self.spawn_reply(peer, async move {
                    let Some(id) = job.id else {
                        return error_reply(format!("job {} not found", job.text));
                    };
                    match backend.cancel(id).await {
                        Ok(job) => {
                            let reply = json!({"status": "success", "job": job_json(&job)});
                            let _ = events.send(Event::Changed(Box::new(job)));
                            reply
                        }
                        Err(error) => error_reply(error),
                    }
                });
            }
            Request::Quit { token } => {
                let allowed = match (&self.config.quit_token, &token) {
                    (Some(secret), Some(token)) => constant_time_eq(secret, token),
                    _ => false,
                };
                if allowed {
                    tracing::info!(%peer, "quit requested");
                    self.reply(&peer, delimited, json!({"status": "bye"})).await;
                    let _ = self.events_tx.send(Event::Stop);
                } else {
                    self.reply(
                        &peer,
                        delimited,
                        error_reply("quit needs the broker's quit token"),
                    )
                    .await;
                }
            }
            Request::Unknown(command) => {
                tracing::debug!(%peer, command, "unknown command");
                self.reply(&peer, delimited, json!({"status": "unknown command!"}))
                    .await;
            }
        }
    }

    /// Whether another request may wait for a later reply; if not, it is answered now.
    async fn admit_deferred(&mut self, peer: &PeerId, delimited: bool) -> bool {
        let waiting = self.idle.values().map(VecDeque::len).sum::<usize>() + self.notifies.len();
        if self.workers.contains_key(peer) || waiting < self.config.max_pending_replies {
            return true;
        }
        self.reply(
            peer,
            delimited,
            error_reply("too many requests are waiting; try again later"),
        )
        .await;
        false
    }

    async fn on_completed(&mut self, peer: PeerId, delimited: bool, completion: Completion) {
        // Whatever the connection was doing, it is done: what did the completion answer?
        let mut answers_ping = false;
        let mut held = None;
        let queue = self.workers.get_mut(&peer).map(|worker| {
            let idle = WorkerState::Idle {
                since: Instant::now(),
            };
            match std::mem::replace(&mut worker.state, idle) {
                WorkerState::Busy { lease, .. } => held = Some(lease),
                WorkerState::Pinged { ping, .. } => {
                    answers_ping = completion.job_id.is_none()
                        || completion.job_id.as_deref() == Some(ping.as_str());
                }
                WorkerState::Idle { .. } => {}
            }
            worker.queue.clone()
        });
        if let Some(held) = &held {
            self.busy.remove(&held.job);
        }
        let job = completion.job_id.as_deref().and_then(|id| id.parse().ok());
        let lease = match (held, job, completion.token) {
            (Some(held), Some(job), _) if held.job == JobId::new(job) => Some(held),
            _ if answers_ping => None,
            // Not the job this connection holds: with a token, the backend judges it; without
            // one it is a late completion (the job was taken back and may run elsewhere).
            (_, Some(job), Some(token)) => Some(self.token_lease(JobId::new(job), token)),
            (_, Some(_), None) => {
                BrokerStats::bump(&self.stats.rejected_completions);
                tracing::warn!(%peer, job = ?completion.job_id, "late completion rejected: the job is no longer this worker's");
                None
            }
            (_, None, _) => None,
        };
        if let Some(lease) = lease {
            self.finish(lease, &completion);
        }
        match (completion.ready && delimited, queue) {
            (true, Some(queue)) => self.make_idle(&peer, &queue),
            (true, None) => {
                // A worker the broker does not know (it restarted): without its queue it
                // cannot be given work; ask it to say ready again.
                self.reply(
                    &peer,
                    delimited,
                    error_reply("unknown worker: send ready with your queue"),
                )
                .await;
            }
            (false, _) => {
                // Idle now, so leaving does not fail the job recorded above.
                self.drop_worker(&peer, "it finished without asking for more");
                self.reply(&peer, delimited, json!({"status": "thanks"}))
                    .await;
            }
        }
    }

    /// Records a job's end in the backend.
    fn finish(&self, lease: JobLease, completion: &Completion) {
        let backend = self.backend.clone();
        let events = self.events_tx.clone();
        let success = completion.success;
        let result = completion.result.clone();
        let retry = if completion.retry {
            Retry::ByPolicy
        } else {
            Retry::Never
        };
        tokio::spawn(async move {
            let outcome = if success {
                backend.complete(&lease, result).await
            } else {
                let error = match &result {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                backend.fail(&lease, &error, retry).await
            };
            let _ = events.send(match outcome {
                Ok(job) => Event::Changed(Box::new(job)),
                Err(error) => Event::Rejected {
                    job: lease.job,
                    error,
                },
            });
        });
    }

    fn on_touch(
        &mut self,
        peer: PeerId,
        job: JobRef,
        timeout: Option<Duration>,
        token: Option<baton_core::FencingToken>,
    ) {
        // The job as this broker handed it out: its worker, lease and timeout.
        let held = job.id.and_then(|id| {
            let worker = self.busy.get(&id)?;
            match &self.workers.get(worker)?.state {
                WorkerState::Busy { lease, timeout, .. } => {
                    Some((Some(worker.clone()), lease.clone(), Some(*timeout)))
                }
                _ => None,
            }
        });
        let (worker, lease, own_timeout) = match (held, job.id, token) {
            (Some(held), _, _) => held,
            (None, Some(id), Some(token)) => (None, self.token_lease(id, token), None),
            _ => {
                let reply = error_reply("the specified job does not appear to be in progress");
                self.spawn_reply(peer, async move { reply });
                return;
            }
        };
        let ttl = timeout
            .or(own_timeout)
            .unwrap_or(self.config.default_timeout)
            .max(Duration::from_millis(1));
        let backend = self.backend.clone();
        let events = self.events_tx.clone();
        self.spawn_reply(peer, async move {
            match backend.touch(&lease, ttl).await {
                Ok(lease) => {
                    if let Some(worker) = worker {
                        let _ = events.send(Event::Touched {
                            peer: worker,
                            lease,
                        });
                    }
                    json!({"status": "success"})
                }
                Err(Error::LeaseLost { .. }) => {
                    let canceled = matches!(
                        backend.get(lease.job).await,
                        Ok(Some(Job { state: JobState::Canceled, .. }))
                    );
                    if canceled {
                        json!({"status": "error", "message": "the job was canceled", "canceled": true})
                    } else {
                        error_reply("the specified job does not appear to be in progress")
                    }
                }
                Err(error) => error_reply(error),
            }
        });
    }

    /// The lease a Baton worker names by its token, for a job this broker run does not know
    /// (it started before a restart): the backend judges it by owner and token.
    fn token_lease(&self, job: JobId, token: baton_core::FencingToken) -> JobLease {
        JobLease {
            job,
            lease: Lease::granted(self.owner.clone(), token, Timestamp::EPOCH),
        }
    }

    fn on_enqueue(&mut self, peer: PeerId, enqueue: Enqueue) {
        let Enqueue {
            mut job,
            retry_given,
            trace_parent,
            ..
        } = enqueue;
        if !retry_given {
            job = match job.with_retry(self.config.default_retry) {
                Ok(job) => job,
                Err(error) => {
                    let reply = error_reply(error);
                    self.spawn_reply(peer, async move { reply });
                    return;
                }
            };
        }
        // The client's trace, when it sent one, is the enqueue span's parent; the job records
        // the enqueue span, so its execution joins the same trace.
        let span = baton_trace::enqueue_span(job.queue().as_str(), 1);
        if let Some(parent) = &trace_parent {
            baton_trace::follow(&span, parent);
        }
        let job = span.in_scope(|| baton_trace::stamp(job));
        // Not traced here: the job still joins the client's trace.
        let job = match trace_parent {
            Some(parent) if job.trace_parent().is_none() => job.with_trace_parent(parent),
            _ => job,
        };
        let backend = self.backend.clone();
        let events = self.events_tx.clone();
        self.spawn_reply(peer, async move {
            match backend.enqueue(&job).instrument(span).await {
                Ok(id) => {
                    let _ = events.send(Event::Enqueued(job.queue().clone(), id));
                    json!({"status": "success", "job_id": id.to_string()})
                }
                Err(error) => error_reply(error),
            }
        });
    }

    fn on_notify(&mut self, peer: PeerId, job: JobRef) {
        let backend = self.backend.clone();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let body = notify(&*backend, &job).await;
            let _ = events.send(Event::Reply { peer, body });
        });
    }

    /// Runs `reply` as its own task and sends what it returns to `peer`.
    fn spawn_reply(&self, peer: PeerId, reply: impl Future<Output = Value> + Send + 'static) {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let body = reply.await;
            let _ = events.send(Event::Reply { peer, body });
        });
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Reply { peer, body } => {
                self.notifies.remove(&peer);
                let delimited = self.owed.get(&peer).copied().unwrap_or(false);
                self.reply(&peer, delimited, body).await;
            }
            Event::Enqueued(queue, id) => {
                self.queues.entry(queue).or_default().ready = true;
                self.notice(id, JobState::Pending).await;
            }
            Event::Reserved { queue, result } => {
                let state = self.queues.entry(queue.clone()).or_default();
                state.reserving = false;
                match result {
                    Ok(jobs) => {
                        if jobs.is_empty() {
                            state.ready = false;
                        }
                        state.spare.extend(jobs);
                    }
                    Err(error) => {
                        tracing::warn!(%queue, %error, "reserving jobs failed");
                        state.ready = false;
                    }
                }
            }
            Event::Changed(job) => self.publish(&job).await,
            Event::Rejected { job, error } => {
                if matches!(error, Error::LeaseLost { .. }) {
                    BrokerStats::bump(&self.stats.rejected_completions);
                    tracing::warn!(%job, "late completion rejected: the worker's lease is no longer current");
                } else {
                    tracing::warn!(%job, %error, "recording a completion failed; the job runs again when its timeout passes");
                }
            }
            Event::Touched { peer, lease } => {
                if let Some(Worker {
                    state: WorkerState::Busy { lease: held, .. },
                    ..
                }) = self.workers.get_mut(&peer)
                    && held.job == lease.job
                    && held.lease.token() == lease.lease.token()
                {
                    *held = lease;
                }
            }
            Event::Expired(ids) => {
                for id in ids {
                    if let Some(peer) = self.busy.remove(&id) {
                        tracing::info!(job = %id, worker = %peer, "job timed out; its worker's completion will be refused");
                    }
                    let backend = self.backend.clone();
                    let events = self.events_tx.clone();
                    tokio::spawn(async move {
                        if let Ok(Some(job)) = backend.get(id).await {
                            let _ = events.send(Event::Changed(Box::new(job)));
                        }
                    });
                }
            }
            Event::Woken(queue) => {
                self.queues.entry(queue).or_default().ready = true;
            }
            Event::Roster(reply) => {
                let mut roster: Vec<WorkerInfo> = self
                    .workers
                    .iter()
                    .map(|(peer, worker)| worker.info(peer))
                    .collect();
                roster.sort_by(|a, b| {
                    (&a.queue, &a.name, &a.peer).cmp(&(&b.queue, &b.name, &b.peer))
                });
                let _ = reply.send(roster);
            }
            Event::Stop => {}
        }
    }

    fn make_idle(&mut self, peer: &PeerId, queue: &QueueName) {
        self.idle
            .entry(queue.clone())
            .or_default()
            .push_back(peer.clone());
        if !self.queues.contains_key(queue) {
            self.queues.insert(
                queue.clone(),
                QueueState {
                    ready: true,
                    ..QueueState::default()
                },
            );
            self.watch_queues();
        }
    }

    /// (Re)opens the wake-up stream on every queue workers have named.
    fn watch_queues(&mut self) {
        if let Some(task) = self.wake_task.take() {
            task.abort();
        }
        let backend = self.backend.clone();
        let queues: Vec<QueueName> = self.queues.keys().cloned().collect();
        let events = self.events_tx.clone();
        self.wake_task = Some(tokio::spawn(async move {
            loop {
                match backend.wakeups(&queues).await {
                    Ok(mut wakeups) => {
                        // Anything enqueued while the stream opened.
                        for queue in &queues {
                            let _ = events.send(Event::Woken(queue.clone()));
                        }
                        while let Some(queue) = wakeups.next().await {
                            if events.send(Event::Woken(queue)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "wake-up stream failed; polling meanwhile")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    /// Hands reserved jobs to waiting workers and reserves more where workers wait.
    async fn dispatch(&mut self) {
        let queues: Vec<QueueName> = self
            .idle
            .iter()
            .filter(|(_, workers)| !workers.is_empty())
            .map(|(queue, _)| queue.clone())
            .collect();
        for queue in queues {
            while let Some(state) = self.queues.get_mut(&queue) {
                let Some(reserved) = state.spare.pop_front() else {
                    break;
                };
                let Some(peer) = self.idle.get_mut(&queue).and_then(VecDeque::pop_front) else {
                    state.spare.push_front(reserved);
                    break;
                };
                self.hand_over(peer, reserved).await;
            }
            let waiting = self.idle.get(&queue).map_or(0, VecDeque::len);
            let Some(state) = self.queues.get_mut(&queue) else {
                continue;
            };
            if waiting > 0 && state.ready && !state.reserving {
                state.reserving = true;
                state.looked = Some(Instant::now());
                let max = waiting.min(baton_core::MAX_RESERVE);
                let backend = self.backend.clone();
                let owner = self.owner.clone();
                let ttl = self.config.default_timeout;
                let events = self.events_tx.clone();
                let name = queue.clone();
                tokio::spawn(async move {
                    let result = backend
                        .reserve(std::slice::from_ref(&name), &owner, ttl, max)
                        .await;
                    let _ = events.send(Event::Reserved {
                        queue: name,
                        result,
                    });
                });
            }
        }
        // Spare jobs of queues nobody waits on any more go back when their timeout passes.
    }

    async fn hand_over(&mut self, peer: PeerId, reserved: Reserved) {
        let Reserved { job, lease } = reserved;
        let own_timeout = protocol::job_timeout(&job);
        let timeout = own_timeout.unwrap_or(self.config.default_timeout);
        let message = job_message(&job, lease.lease.token(), timeout);
        let id = lease.job;
        self.busy.insert(id, peer.clone());
        if let Some(worker) = self.workers.get_mut(&peer) {
            worker.state = WorkerState::Busy {
                lease: lease.clone(),
                timeout,
                job: message.clone(),
            };
        }
        BrokerStats::bump(&self.stats.dispatched);
        let delimited = self.owed.get(&peer).copied().unwrap_or(true);
        self.reply(&peer, delimited, message).await;
        self.notice(id, JobState::Running).await;
        if let Some(timeout) = own_timeout.filter(|t| *t != self.config.default_timeout) {
            let backend = self.backend.clone();
            let events = self.events_tx.clone();
            tokio::spawn(async move {
                if let Ok(lease) = backend.touch(&lease, timeout).await {
                    let _ = events.send(Event::Touched { peer, lease });
                }
            });
        }
    }

    fn look_for_expired(&self) {
        let backend = self.backend.clone();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            match backend.requeue_expired().await {
                Ok(ids) if !ids.is_empty() => {
                    let _ = events.send(Event::Expired(ids));
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "looking for timed-out jobs failed"),
            }
        });
    }

    /// Marks queues with waiting workers ready again after a poll interval without wake-ups.
    fn poll_queues(&mut self) {
        let interval = self.config.poll_interval;
        for (queue, workers) in &self.idle {
            if workers.is_empty() {
                continue;
            }
            if let Some(state) = self.queues.get_mut(queue)
                && state.looked.is_none_or(|at| at.elapsed() >= interval)
            {
                state.ready = true;
            }
        }
    }

    async fn ping_idle_workers(&mut self) {
        let now = Instant::now();
        let mut ping = Vec::new();
        let mut gone = Vec::new();
        for (peer, worker) in &self.workers {
            match &worker.state {
                WorkerState::Idle { since }
                    if now.duration_since(*since) >= self.config.idle_ping_interval =>
                {
                    ping.push(peer.clone());
                }
                WorkerState::Pinged { deadline, .. } if now >= *deadline => {
                    gone.push(peer.clone());
                }
                _ => {}
            }
        }
        for peer in gone {
            self.drop_worker(&peer, "it did not answer an idle ping");
        }
        for peer in ping {
            self.ping_seq += 1;
            let id = format!("idle-{}-{}", std::process::id(), self.ping_seq);
            let Some(worker) = self.workers.get_mut(&peer) else {
                continue;
            };
            let queue = worker.queue.clone();
            worker.state = WorkerState::Pinged {
                ping: id.clone(),
                deadline: now + self.config.ping_timeout,
            };
            if let Some(idle) = self.idle.get_mut(&queue) {
                idle.retain(|waiting| *waiting != peer);
            }
            let delimited = self.owed.get(&peer).copied().unwrap_or(true);
            self.reply(&peer, delimited, json!({"command": "idle", "job_id": id}))
                .await;
        }
    }

    async fn quit_idle_workers(&mut self) {
        let idle: Vec<PeerId> = self
            .workers
            .iter()
            .filter(|(_, worker)| matches!(worker.state, WorkerState::Idle { .. }))
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in idle {
            let delimited = self.owed.get(&peer).copied().unwrap_or(true);
            self.reply(&peer, delimited, json!({"command": "quit"}))
                .await;
        }
    }

    /// Forgets a worker connection. A job it was running stays leased until its timeout, or
    /// goes back now if the connection is gone.
    fn drop_worker(&mut self, peer: &PeerId, why: &str) {
        let Some(worker) = self.workers.remove(peer) else {
            return;
        };
        BrokerStats::bump(&self.stats.workers_lost);
        tracing::info!(worker = %peer, name = ?worker.name, queue = %worker.queue, why, "worker dropped");
        if let Some(idle) = self.idle.get_mut(&worker.queue) {
            let before = idle.len();
            idle.retain(|waiting| waiting != peer);
            if idle.len() < before {}
        }
        if let WorkerState::Busy { lease, .. } = worker.state {
            self.busy.remove(&lease.job);
            // The worker cannot finish it any more: the attempt counts, and the job runs again
            // if its retry policy allows.
            let backend = self.backend.clone();
            let events = self.events_tx.clone();
            let why = format!("worker lost: {why}");
            tokio::spawn(async move {
                match backend
                    .fail(&lease, &why, Retry::After(Duration::ZERO))
                    .await
                {
                    Ok(job) => {
                        let _ = events.send(Event::Changed(Box::new(job)));
                    }
                    Err(error) => {
                        tracing::debug!(job = %lease.job, %error, "returning a lost worker's job")
                    }
                }
            });
            self.queues.entry(worker.queue).or_default().ready = true;
        }
    }

    fn status(&self) -> Value {
        let mut queues = serde_json::Map::new();
        for queue in self.queues.keys() {
            queues.insert(queue.as_str().to_owned(), json!({}));
        }
        for (peer, worker) in &self.workers {
            let entry = queues
                .entry(worker.queue.as_str().to_owned())
                .or_insert_with(|| json!({}));
            let description = match &worker.state {
                WorkerState::Busy { lease, job, .. } => json!({
                    "status": "processing",
                    "name": worker.name,
                    "queue": worker.queue.as_str(),
                    "job_id": lease.job.to_string(),
                    "job": job,
                }),
                WorkerState::Idle { .. } | WorkerState::Pinged { .. } => json!({
                    "status": "idle",
                    "name": worker.name,
                    "queue": worker.queue.as_str(),
                }),
            };
            if let Value::Object(map) = entry {
                map.insert(peer.to_hex(), description);
            }
        }
        json!({
            "status": "OK",
            "queues": queues,
            "workers": self.workers.len(),
            "jobs_in_progress": self.busy.len(),
            "notify_waiting": self.notifies.len(),
        })
    }

    /// Publishes `<id>\n<status>` on the PUB socket, if there is one.
    async fn notice(&mut self, id: JobId, state: JobState) {
        if let Some(publisher) = &mut self.publisher {
            let notice = format!("{id}\n{}", status_string(state));
            if let Err(error) = publisher.publish(notice).await {
                tracing::debug!(%error, "publishing a state change failed");
            }
        }
    }

    async fn publish(&mut self, job: &Job) {
        self.notice(job.id, job.state).await;
        if job.state == JobState::Succeeded || job.state.is_terminal() {
            BrokerStats::bump(&self.stats.completed);
        }
    }

    /// Sends a reply the peer is owed; nothing if it is owed none (its REQ-REP cycle holds).
    async fn reply(&mut self, peer: &PeerId, delimited: bool, body: Value) {
        if delimited && self.owed.remove(peer).is_none() {
            return;
        }
        self.send(peer, delimited, body).await;
    }

    async fn send(&mut self, peer: &PeerId, delimited: bool, body: Value) {
        let bytes = Bytes::from(body.to_string());
        if let Err(error) = self.router.send(peer, delimited, bytes).await {
            BrokerStats::bump(&self.stats.dropped_replies);
            tracing::debug!(%error, "reply dropped");
        }
    }
}

/// The job a request names.
async fn fetch(backend: &dyn Backend, job: &JobRef) -> baton_core::Result<Job> {
    let not_found = || Error::not_found(format!("job {}", job.text));
    let id = job.id.ok_or_else(not_found)?;
    backend.get(id).await?.ok_or_else(not_found)
}

/// Waits until a job is terminal, and answers as the seed does.
async fn notify(backend: &dyn Backend, job: &JobRef) -> Value {
    let Some(id) = job.id else {
        return error_reply(format!("job {} not found", job.text));
    };
    let mut events = match backend.subscribe(id).await {
        Ok(events) => events,
        Err(error) => return error_reply(error),
    };
    loop {
        match backend.get(id).await {
            Ok(Some(job)) if job.state.is_terminal() => {
                return json!({
                    "status": status_string(job.state),
                    "job_id": job.id.to_string(),
                    "job": job_json(&job),
                });
            }
            Ok(Some(_)) => {}
            Ok(None) => return error_reply(format!("job {id} not found")),
            Err(error) => return error_reply(error),
        }
        // Wait for the next change; a closed stream (a backend reconnecting) is reopened.
        if events.next().await.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match backend.subscribe(id).await {
                Ok(stream) => events = stream,
                Err(error) => return error_reply(error),
            }
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Now, by this host's clock: when workers were seen, for people reading the roster.
fn wall_clock() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}
