//! [`WorkPool`]: registering handlers, enqueueing, status, cancellation and the stored limit.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use baton_core::{Backend, Error, Job, JobId, JobState, NewJob, Result, RetryPolicy, Timestamp};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::{EnqueueOptions, MAX_PARALLELISM, PoolConfig, RetryBehavior};
use crate::handler::{
    Completion, CompletionFn, HandlerError, HandlerFn, JobContext, Outcome, completion_fn,
    handler_fn,
};
use crate::member::Member;
use crate::names::{CancelAllPayload, CompletionPayload, Names, SettingsPayload, WorkPayload};
use crate::stats::{Counters, Event, PoolStats};

/// A durable work pool: jobs that run registered async handlers, at most `max_parallelism` at
/// once across every process that runs the pool, with retries, cancellation, recovery after a
/// member dies, and a completion callback that is recorded exactly once per job.
///
/// A `WorkPool` is a cheap handle; clones share handlers and counters. Enqueueing, status and
/// cancellation work without [`start`](WorkPool::start)ing it, so a process may be a client
/// only.
#[derive(Clone)]
pub struct WorkPool {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: PoolConfig,
    pub(crate) names: Names,
    pub(crate) handlers: RwLock<HashMap<String, HandlerFn>>,
    pub(crate) completions: RwLock<HashMap<String, CompletionFn>>,
    pub(crate) counters: Counters,
    /// This member's view of the stored limit.
    pub(crate) limit: watch::Sender<usize>,
    /// This member's view of the newest cancel-all record.
    pub(crate) cancel_through: watch::Sender<Option<JobId>>,
    /// Bumped whenever there may be new due work.
    pub(crate) work_wake: watch::Sender<u64>,
    /// Bumped whenever there may be new completion records.
    pub(crate) completion_wake: watch::Sender<u64>,
    /// Permits for this member's slots, when its concurrency is capped.
    pub(crate) member_permits: Option<Arc<tokio::sync::Semaphore>>,
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to run, for the first time or for a retry.
    Pending {
        /// Attempts made so far.
        previous_attempts: u32,
        /// When it is due, by the backend's clock.
        run_at: Timestamp,
    },
    /// An attempt is running.
    Running {
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// Ended.
    Finished {
        /// How.
        outcome: Outcome,
        /// Attempts made.
        attempts: u32,
    },
}

impl JobStatus {
    /// The status of `job` as stored.
    pub fn of(job: &Job) -> Self {
        match job.state {
            JobState::Pending => Self::Pending {
                previous_attempts: job.attempts,
                run_at: job.run_at,
            },
            JobState::Running => Self::Running {
                attempt: job.attempts,
            },
            JobState::Succeeded | JobState::Failed | JobState::Canceled => Self::Finished {
                outcome: outcome_of(job),
                attempts: job.attempts,
            },
        }
    }

    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Finished { .. })
    }
}

pub(crate) fn outcome_of(job: &Job) -> Outcome {
    match job.state {
        JobState::Succeeded => Outcome::Succeeded {
            result: job.result.clone().unwrap_or(Value::Null),
        },
        JobState::Canceled => Outcome::Canceled,
        _ => Outcome::Failed {
            error: job.error.clone().unwrap_or_default(),
        },
    }
}

/// The queue-level policy of a completion record: retried at once after an expired attempt,
/// never given up.
pub(crate) fn completion_record_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff_ms: 0,
        base: 1.0,
        max_backoff_ms: 0,
        jitter: 0.0,
    }
}

impl WorkPool {
    /// A pool on `backend` with `config`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the configuration does not
    /// [validate](PoolConfig::validate).
    pub fn new(backend: Arc<dyn Backend>, config: PoolConfig) -> Result<Self> {
        config.validate()?;
        let names = Names::new(&config.name)?;
        let limit = config.max_parallelism;
        Ok(Self {
            shared: Arc::new(Shared {
                backend,
                names,
                handlers: RwLock::default(),
                completions: RwLock::default(),
                counters: Counters::default(),
                limit: watch::Sender::new(limit),
                cancel_through: watch::Sender::new(None),
                work_wake: watch::Sender::new(0),
                completion_wake: watch::Sender::new(0),
                member_permits: config
                    .member_concurrency
                    .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
                config,
            }),
        })
    }

    /// Registers `handler` under `name`: jobs enqueued for `name` run it with their argument.
    /// Every member that may run such jobs registers it.
    pub fn register<F, Fut>(&self, name: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(JobContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Value, HandlerError>> + Send + 'static,
    {
        write(&self.shared.handlers).insert(name.into(), handler_fn(handler));
        self
    }

    /// Registers a completion handler under `name`, for jobs enqueued with
    /// [`EnqueueOptions::on_complete`]. It is called once per job that ends (succeeded,
    /// failed or canceled), by some member of the pool, and called again only if the member
    /// calling it dies or loses its lease before the call is recorded.
    pub fn on_complete<F, Fut>(&self, name: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Completion) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        write(&self.shared.completions).insert(name.into(), completion_fn(handler));
        self
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Enqueues one job for `handler` with `args`; returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an oversized argument or an invalid retry behaviour;
    /// `Backend` if it could not be stored.
    pub async fn enqueue(
        &self,
        handler: &str,
        args: Value,
        options: EnqueueOptions,
    ) -> Result<JobId> {
        let job = self.new_job(handler, args, options)?;
        let span = baton_trace::enqueue_span(job.queue().as_str(), 1);
        let job = span.in_scope(|| baton_trace::stamp(job));
        let id = self.shared.backend.enqueue(&job).instrument(span).await?;
        tracing::debug!(pool = %self.shared.config.name, job = %id, handler, "enqueued");
        Ok(id)
    }

    /// Enqueues several jobs in one step, all or none; returns their ids in order.
    ///
    /// # Errors
    ///
    /// As for [`enqueue`](WorkPool::enqueue), and `InvalidInput` for more than
    /// [`MAX_BATCH`](baton_core::MAX_BATCH) jobs.
    pub async fn enqueue_batch(
        &self,
        jobs: impl IntoIterator<Item = (String, Value, EnqueueOptions)>,
    ) -> Result<Vec<JobId>> {
        let jobs = jobs
            .into_iter()
            .map(|(handler, args, options)| self.new_job(&handler, args, options))
            .collect::<Result<Vec<_>>>()?;
        let span = baton_trace::enqueue_span(self.shared.config.name.as_str(), jobs.len());
        let jobs: Vec<_> = span.in_scope(|| jobs.into_iter().map(baton_trace::stamp).collect());
        let ids = self
            .shared
            .backend
            .enqueue_batch(&jobs)
            .instrument(span)
            .await?;
        tracing::debug!(pool = %self.shared.config.name, jobs = ids.len(), "enqueued a batch");
        Ok(ids)
    }

    fn new_job(&self, handler: &str, args: Value, options: EnqueueOptions) -> Result<NewJob> {
        let retry = options
            .retry
            .or(self.shared.config.default_retry)
            .unwrap_or_else(RetryBehavior::never);
        if retry.max_attempts == 0 {
            return Err(Error::invalid("retry max_attempts must be at least 1"));
        }
        let has_callback = options.on_complete.is_some();
        let delay = options.start.delay();
        let payload = WorkPayload::new(
            handler.to_owned(),
            args,
            options.name,
            &retry,
            options.on_complete,
        );
        let payload = serde_json::to_value(&payload)
            .map_err(|e| Error::invalid(format!("job is not serializable: {e}")))?;
        NewJob::new(self.shared.names.work.clone(), payload)?
            .with_delay(delay)
            .with_retry(retry.policy(has_callback))
    }

    /// Where job `id` is.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a job that does not exist (or was purged) or belongs to
    /// another pool.
    pub async fn status(&self, id: JobId) -> Result<JobStatus> {
        Ok(JobStatus::of(&self.job(id).await?))
    }

    /// The status of each job in `ids`, in order; `None` for jobs not found.
    ///
    /// # Errors
    ///
    /// `Backend` if the backend failed.
    pub async fn status_batch(&self, ids: &[JobId]) -> Result<Vec<Option<JobStatus>>> {
        let mut statuses = Vec::with_capacity(ids.len());
        for id in ids {
            statuses.push(match self.job(*id).await {
                Ok(job) => Some(JobStatus::of(&job)),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            });
        }
        Ok(statuses)
    }

    pub(crate) async fn job(&self, id: JobId) -> Result<Job> {
        match self.shared.backend.get(id).await? {
            Some(job) if job.queue == self.shared.names.work => Ok(job),
            _ => Err(Error::not_found(format!(
                "job {id} in pool {}",
                self.shared.config.name
            ))),
        }
    }

    /// Cancels job `id`: pending, it never starts; waiting between attempts, it is not retried;
    /// running, its handler's [`CancelSignal`](crate::CancelSignal) is set (and it is dropped
    /// after the pool's `cancel_grace`). Its completion callback, if any, is recorded before
    /// the job is canceled, so it runs even if this process dies at once. Canceling a job that
    /// already ended changes nothing. Returns the job's status afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown job; `Backend` if the backend failed (the job may
    /// or may not be canceled then).
    pub async fn cancel(&self, id: JobId) -> Result<JobStatus> {
        let job = self.job(id).await?;
        cancel_job(&self.shared, &job).await?;
        self.status(id).await
    }

    /// Cancels every job of the pool enqueued before this call. Running ones get their
    /// cancellation signal within a renewal interval (a third of the lease), and pending ones
    /// are canceled, never started, when they come due. Returns the id up to which jobs are
    /// canceled, or `None` if the pool has never had a job.
    ///
    /// # Errors
    ///
    /// `Backend` if the cancel-all record could not be stored.
    pub async fn cancel_all(&self) -> Result<Option<JobId>> {
        let Some(last) = self.shared.backend.last(&self.shared.names.work).await? else {
            return Ok(None);
        };
        let payload = serde_json::to_value(CancelAllPayload { through: last.id })
            .map_err(|e| Error::invalid(e.to_string()))?;
        self.shared
            .backend
            .enqueue(&NewJob::new(self.shared.names.cancel_all.clone(), payload)?)
            .await?;
        self.shared
            .cancel_through
            .send_if_modified(|through| raise(through, last.id));
        self.shared.work_wake.send_modify(|n| *n += 1);
        tracing::info!(pool = %self.shared.config.name, through = %last.id, "canceling every job");
        Ok(Some(last.id))
    }

    /// Stores a new cluster-wide limit on running jobs: raised, more start at once; lowered,
    /// no job starts until fewer than `max_parallelism` run (running jobs are not
    /// interrupted); 0 pauses the pool. Every member picks it up on its next wake-up or poll.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] above [`MAX_PARALLELISM`]; `Backend` if it could not be stored.
    pub async fn set_max_parallelism(&self, max_parallelism: usize) -> Result<()> {
        if max_parallelism > MAX_PARALLELISM {
            return Err(Error::invalid(format!(
                "max_parallelism may be at most {MAX_PARALLELISM}, not {max_parallelism}"
            )));
        }
        let payload = serde_json::to_value(SettingsPayload { max_parallelism })
            .map_err(|e| Error::invalid(e.to_string()))?;
        self.shared
            .backend
            .enqueue(&NewJob::new(self.shared.names.settings.clone(), payload)?)
            .await?;
        self.shared.limit.send_replace(max_parallelism);
        tracing::info!(pool = %self.shared.config.name, max_parallelism, "limit changed");
        Ok(())
    }

    /// The cluster-wide limit as this member last read it.
    pub fn max_parallelism(&self) -> usize {
        *self.shared.limit.borrow()
    }

    /// Re-reads the stored limit and cancel-all record now.
    ///
    /// # Errors
    ///
    /// `Backend` if the backend failed.
    pub async fn refresh(&self) -> Result<()> {
        refresh_settings(&self.shared).await
    }

    /// What this member has done since it was created.
    pub fn stats(&self) -> PoolStats {
        self.shared.counters.snapshot()
    }

    /// The queue holding the pool's jobs, for inspection with the [`Queue`](baton_core::Queue)
    /// trait (counts, purging).
    pub fn work_queue(&self) -> &baton_core::QueueName {
        &self.shared.names.work
    }

    /// The queue holding the pool's completion records.
    pub fn completion_queue(&self) -> &baton_core::QueueName {
        &self.shared.names.completions
    }

    /// Starts running the pool in this process: its share of jobs, completion callbacks,
    /// recovery of expired work and the periodic report. Needs a Tokio runtime.
    pub fn start(&self) -> Member {
        Member::start(self.shared.clone())
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn raise(through: &mut Option<JobId>, id: JobId) -> bool {
    if through.is_none_or(|current| current < id) {
        *through = Some(id);
        true
    } else {
        false
    }
}

/// Reads the newest settings and cancel-all records into this member's views.
pub(crate) async fn refresh_settings(shared: &Shared) -> Result<()> {
    if let Some(record) = shared.backend.last(&shared.names.settings).await? {
        match serde_json::from_value::<SettingsPayload>(record.payload) {
            Ok(settings) => {
                let limit = settings.max_parallelism.min(MAX_PARALLELISM);
                shared.limit.send_if_modified(|current| {
                    let changed = *current != limit;
                    *current = limit;
                    changed
                });
            }
            Err(e) => {
                tracing::error!(pool = %shared.config.name, "unreadable settings record: {e}")
            }
        }
    }
    if let Some(record) = shared.backend.last(&shared.names.cancel_all).await? {
        match serde_json::from_value::<CancelAllPayload>(record.payload) {
            Ok(cancel) => {
                shared
                    .cancel_through
                    .send_if_modified(|through| raise(through, cancel.through));
            }
            Err(e) => {
                tracing::error!(pool = %shared.config.name, "unreadable cancel-all record: {e}");
            }
        }
    }
    Ok(())
}

/// Records the completion callback of `job` (if it has one), then cancels it. A record made
/// for a job that then ends otherwise is harmless: the callback runs once, for however the job
/// ended.
pub(crate) async fn cancel_job(shared: &Shared, job: &Job) -> Result<()> {
    if job.state.is_terminal() {
        return Ok(());
    }
    let has_callback = serde_json::from_value::<WorkPayload>(job.payload.clone())
        .map(|payload| payload.on_complete.is_some())
        .unwrap_or(false);
    if has_callback {
        record_completion(shared, job.id).await?;
    }
    match shared.backend.cancel(job.id).await {
        Ok(canceled) => {
            if job.state != JobState::Canceled && canceled.state == JobState::Canceled {
                shared.counters.record(Event::Canceled);
                tracing::debug!(pool = %shared.config.name, job = %job.id, "canceled");
            }
            Ok(())
        }
        // It ended in the meantime; its own end stands.
        Err(Error::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Stores a completion record for `job`, to be run by any member once the job has ended.
pub(crate) async fn record_completion(shared: &Shared, job: JobId) -> Result<()> {
    let payload = serde_json::to_value(CompletionPayload { job })
        .map_err(|e| Error::invalid(e.to_string()))?;
    let record = NewJob::new(shared.names.completions.clone(), payload)?
        .with_retry(completion_record_policy())?;
    shared.backend.enqueue(&record).await?;
    Ok(())
}

/// Waits until `wake` changes, `stop` is set, or `timeout` passes.
pub(crate) async fn wait_for_wake(
    wake: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
    timeout: Duration,
) {
    tokio::select! {
        _ = wake.changed() => {}
        _ = stop.changed() => {}
        () = tokio::time::sleep(timeout) => {}
    }
}
