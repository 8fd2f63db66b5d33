//! The task runner: each task a child process in its own process group, holding its locks for
//! its whole life and freeing them the moment it exits.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use baton_core::{Error, Heartbeat, Lock, Owner, Result, Timestamp};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fair::{Acquired, Blocked, FairLocks, HeldLocks, LockSettings};
use crate::task::{Failure, TaskId, TaskRecord, TaskSpec, TaskState};

/// The environment variable that tells a task its number.
pub const TASK_ID_ENV: &str = "BATON_TASK_ID";
/// The environment variable that tells a task the path of its log file.
pub const TASK_LOG_ENV: &str = "BATON_TASK_LOG";
/// The environment variable that hands a task the fencing token of its locks.
pub const FENCING_TOKEN_ENV: &str = "BATON_FENCING_TOKEN";
/// The environment variable that lists a task's locks, separated by newlines.
pub const TASK_LOCKS_ENV: &str = "BATON_TASK_LOCKS";

/// How a [`TaskRunner`] runs its tasks.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Who holds the locks of this runner's tasks, such as `host-1234`; it also beats a
    /// heartbeat under this name while the runner lives.
    pub owner: Owner,
    /// Lock timings. The TTL bounds how long the locks of a runner that died outlive it.
    pub locks: LockSettings,
    /// How long a task may take to exit after SIGTERM before it gets SIGKILL. At most
    /// `locks.stop_margin`, so that a task whose locks are lost is gone before they expire.
    pub kill_grace: Duration,
    /// Where task logs go, one file per task, unless a task names its own.
    pub log_dir: PathBuf,
    /// Environment variables every task gets, such as how to reach the backend, so that it can
    /// take more locks for part of its life with `baton lock run`.
    pub env: Vec<(String, String)>,
    /// The number of the runner's first task; the next ones count up from it.
    pub first_task_id: u64,
}

impl RunnerConfig {
    /// A runner for `owner` writing logs to `log_dir`, with the default timings: 30 s locks,
    /// 10 s kill grace.
    pub fn new(owner: Owner, log_dir: impl Into<PathBuf>) -> Self {
        Self {
            owner,
            locks: LockSettings::default(),
            kill_grace: Duration::from_secs(10),
            log_dir: log_dir.into(),
            env: Vec::new(),
            first_task_id: 1,
        }
    }

    /// Checks the timings.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the bad timing.
    pub fn validate(&self) -> Result<()> {
        self.locks.validate()?;
        if self.kill_grace > self.locks.stop_margin {
            return Err(Error::invalid(format!(
                "kill grace of {:?} is longer than the stop margin of {:?}: a task whose locks \
                 are lost could outlive them",
                self.kill_grace, self.locks.stop_margin
            )));
        }
        Ok(())
    }
}

/// Runs tasks as child processes under their locks, and keeps their records.
///
/// Records live in this runner's memory (the backend traits have no place for them): a task is
/// listed by the runner that runs it, and its locks, with its description as their reason, are
/// what other processes see of it.
pub struct TaskRunner<B: ?Sized> {
    inner: Arc<Inner<B>>,
}

impl<B: ?Sized> Clone for TaskRunner<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B: ?Sized> {
    locks: FairLocks<B>,
    config: RunnerConfig,
    next_id: AtomicU64,
    tasks: Mutex<BTreeMap<TaskId, Slot>>,
    heartbeat: JoinHandle<()>,
}

impl<B: ?Sized> Drop for Inner<B> {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

struct Slot {
    record: watch::Receiver<TaskRecord>,
    kill: watch::Sender<bool>,
}

/// A task handed to a runner: its record as it changes.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    id: TaskId,
    record: watch::Receiver<TaskRecord>,
}

impl TaskHandle {
    /// The task's number.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Its record now.
    pub fn record(&self) -> TaskRecord {
        self.record.borrow().clone()
    }

    /// Its record once `condition` holds for it (or once it has ended, whichever is first).
    pub async fn wait_until(&self, condition: impl Fn(&TaskRecord) -> bool) -> TaskRecord {
        let mut record = self.record.clone();
        match record
            .wait_for(|r| condition(r) || r.state.is_final())
            .await
        {
            Ok(r) => r.clone(),
            Err(_) => self.record(),
        }
    }

    /// Its record once it has ended.
    pub async fn finished(&self) -> TaskRecord {
        self.wait_until(|r| r.state.is_final()).await
    }
}

impl<B: Lock + Heartbeat + ?Sized + 'static> TaskRunner<B> {
    /// A runner on `backend`; it starts beating its owner's heartbeat at once.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for bad timings (see [`RunnerConfig::validate`]).
    pub fn new(backend: Arc<B>, config: RunnerConfig) -> Result<Self> {
        config.validate()?;
        let locks = FairLocks::new(backend.clone(), config.owner.clone(), config.locks.clone())?;
        let heartbeat = tokio::spawn(beat(backend, config.owner.clone(), config.locks.ttl));
        Ok(Self {
            inner: Arc::new(Inner {
                locks,
                next_id: AtomicU64::new(config.first_task_id),
                tasks: Mutex::default(),
                heartbeat,
                config,
            }),
        })
    }

    /// The fair locks of this runner's owner: how code in this process takes a lock for part of
    /// a task's life (a child process uses `baton lock run`).
    pub fn locks(&self) -> &FairLocks<B> {
        &self.inner.locks
    }

    /// Starts `spec`: it waits for its locks, runs, and frees them when its process exits.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a spec without a program or locks, or with a name
    /// [`task_lock`](crate::task_lock) refuses.
    pub fn run(&self, spec: TaskSpec) -> Result<TaskHandle> {
        spec.validate()?;
        let id = TaskId(self.inner.next_id.fetch_add(1, Ordering::SeqCst));
        let log_path = spec.log_path.clone().unwrap_or_else(|| {
            self.inner
                .config
                .log_dir
                .join(format!("{}-task-{id}.log", self.inner.config.owner))
        });
        let mut locks = spec.locks.clone();
        locks.sort();
        locks.dedup();
        let record = TaskRecord {
            id,
            command: spec.command(),
            locks,
            reason: spec.reason.clone(),
            state: TaskState::Waiting,
            waiting_for: None,
            pid: None,
            token: None,
            exit_code: None,
            signal: None,
            failure: None,
            error: None,
            created_at: now(),
            started_at: None,
            ended_at: None,
            log_path,
        };
        let (record_tx, record_rx) = watch::channel(record);
        let (kill_tx, kill_rx) = watch::channel(false);
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id,
                Slot {
                    record: record_rx.clone(),
                    kill: kill_tx,
                },
            );
        tokio::spawn(drive(self.inner.clone(), spec, record_tx, kill_rx));
        Ok(TaskHandle {
            id,
            record: record_rx,
        })
    }

    /// The record of task `id`, if this runner has it.
    pub fn get(&self, id: TaskId) -> Option<TaskRecord> {
        self.handle(id).map(|handle| handle.record())
    }

    /// A handle on task `id`, if this runner has it.
    pub fn handle(&self, id: TaskId) -> Option<TaskHandle> {
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.get(&id).map(|slot| TaskHandle {
            id,
            record: slot.record.clone(),
        })
    }

    /// Every task's record, by number.
    pub fn list(&self) -> Vec<TaskRecord> {
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks
            .values()
            .map(|slot| slot.record.borrow().clone())
            .collect()
    }

    /// Stops task `id`: a waiting task leaves the line; a running one gets SIGTERM to its
    /// process group, then SIGKILL after the kill grace. Returns its record once it has ended
    /// and its locks are freed.
    ///
    /// # Errors
    ///
    /// `NotFound` if this runner has no task `id`.
    pub async fn kill(&self, id: TaskId) -> Result<TaskRecord> {
        let handle = {
            let tasks = self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = tasks
                .get(&id)
                .ok_or_else(|| Error::not_found(format!("task {id}")))?;
            slot.kill.send_replace(true);
            TaskHandle {
                id,
                record: slot.record.clone(),
            }
        };
        Ok(handle.finished().await)
    }

    /// The log of task `id` as written so far.
    ///
    /// # Errors
    ///
    /// `NotFound` if this runner has no task `id` or its log cannot be read.
    pub fn read_log(&self, id: TaskId) -> Result<String> {
        let record = self
            .get(id)
            .ok_or_else(|| Error::not_found(format!("task {id}")))?;
        std::fs::read_to_string(&record.log_path).map_err(|error| {
            Error::not_found(format!(
                "log of task {id} at {}: {error}",
                record.log_path.display()
            ))
        })
    }
}

/// Beats `owner`'s heartbeat every third of `ttl` for as long as the runner lives.
async fn beat<B: Heartbeat + ?Sized>(backend: Arc<B>, owner: Owner, ttl: Duration) {
    loop {
        if let Err(error) = backend.beat(&owner, ttl).await {
            tracing::warn!(%error, %owner, "could not beat the runner's heartbeat");
        }
        tokio::time::sleep(ttl / 3).await;
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Appends a line of the runner's own to a task's log.
fn note(log: &mut Option<std::fs::File>, line: &str) {
    if let Some(file) = log {
        let _ = writeln!(file, "[baton] {line}");
    }
}

fn finish(
    record: &watch::Sender<TaskRecord>,
    state: TaskState,
    failure: Option<(Failure, String)>,
) {
    record.send_modify(|r| {
        r.state = state;
        r.waiting_for = None;
        r.failure = failure.as_ref().map(|(failure, _)| *failure);
        r.error = failure.map(|(_, error)| error);
        r.ended_at = Some(now());
    });
}

/// A task's whole life.
async fn drive<B: Lock + Heartbeat + ?Sized + 'static>(
    inner: Arc<Inner<B>>,
    spec: TaskSpec,
    record: watch::Sender<TaskRecord>,
    mut kill: watch::Receiver<bool>,
) {
    let (id, log_path, description, locks) = {
        let r = record.borrow();
        (r.id, r.log_path.clone(), r.description(), r.locks.clone())
    };
    if let Some(dir) = log_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path);
    let mut log = match opened {
        Ok(file) => Some(file),
        Err(error) => {
            let message = format!("cannot open the log {}: {error}", log_path.display());
            finish(&record, TaskState::Failed, Some((Failure::Error, message)));
            return;
        }
    };
    let names: Vec<String> = locks.iter().map(ToString::to_string).collect();
    note(
        &mut log,
        &format!("{description} wants {}", names.join(", ")),
    );
    let mut log_for_wait = log.as_ref().and_then(|f| f.try_clone().ok());
    let mut on_wait = |blocked: &Blocked| {
        let message = blocked.message();
        note(&mut log_for_wait, &message);
        record.send_modify(|r| r.waiting_for = Some(message));
    };
    let acquired = inner
        .locks
        .acquire(&locks, &description, spec.wait, &mut on_wait, &mut kill)
        .await;
    let held = match acquired {
        Ok(Acquired::Granted(held)) => held,
        Ok(Acquired::Busy(blocked)) => {
            let message = format!("could not have its locks: {}", blocked.message());
            note(&mut log, &message);
            finish(
                &record,
                TaskState::Failed,
                Some((Failure::LocksBusy, message)),
            );
            return;
        }
        Ok(Acquired::Cancelled) => {
            note(&mut log, "killed while waiting for its locks");
            finish(&record, TaskState::Killed, None);
            return;
        }
        Err(error) => {
            let message = format!("could not take its locks: {error}");
            note(&mut log, &message);
            finish(&record, TaskState::Failed, Some((Failure::Error, message)));
            return;
        }
    };
    if *kill.borrow() {
        release(held, &mut log).await;
        note(&mut log, "killed while waiting for its locks");
        finish(&record, TaskState::Killed, None);
        return;
    }
    let token = held.token();
    let output = |log: &Option<std::fs::File>| {
        log.as_ref()
            .and_then(|f| f.try_clone().ok())
            .map_or_else(Stdio::null, Stdio::from)
    };
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(inner.config.env.iter().cloned())
        .envs(spec.env.iter().cloned())
        .env(TASK_ID_ENV, id.to_string())
        .env(TASK_LOG_ENV, &log_path)
        .env(FENCING_TOKEN_ENV, token.to_string())
        .env(TASK_LOCKS_ENV, names.join("\n"))
        .stdin(Stdio::null())
        .stdout(output(&log))
        .stderr(output(&log))
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = format!("cannot run {:?}: {error}", spec.program);
            note(&mut log, &message);
            release(held, &mut log).await;
            finish(&record, TaskState::Failed, Some((Failure::Error, message)));
            return;
        }
    };
    let pid = child.id();
    note(
        &mut log,
        &format!(
            "running as pid {} with fencing token {token}",
            pid.unwrap_or(0)
        ),
    );
    record.send_modify(|r| {
        r.state = TaskState::Running;
        r.waiting_for = None;
        r.pid = pid;
        r.token = Some(token);
        r.started_at = Some(now());
    });
    let group = pid
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    let signal_group = |signal: Signal| {
        if let Some(group) = group {
            let _ = killpg(group, signal);
        }
    };
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut sigkill_at = far_future;
    let mut stopping = false;
    let mut killed = false;
    let mut lost: Option<String> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = wait_true(&mut kill), if !stopping => {
                note(&mut log, "killed: SIGTERM to its process group");
                killed = true;
                stopping = true;
                signal_group(Signal::SIGTERM);
                sigkill_at = Instant::now() + inner.config.kill_grace;
            }
            reason = held.lost(), if !stopping => {
                note(&mut log, &format!("{reason}: SIGTERM to its process group"));
                lost = Some(reason);
                stopping = true;
                signal_group(Signal::SIGTERM);
                sigkill_at = Instant::now() + inner.config.kill_grace;
            }
            () = tokio::time::sleep_until(sigkill_at), if stopping => {
                note(&mut log, "still running after the grace period: SIGKILL to its process group");
                signal_group(Signal::SIGKILL);
                sigkill_at = far_future;
            }
        }
    };
    // Whatever the task left running in its group would run without its locks.
    signal_group(Signal::SIGKILL);
    release(held, &mut log).await;
    let (state, error) = match (&status, killed, lost) {
        (_, true, _) => (TaskState::Killed, None),
        (_, false, Some(reason)) => (TaskState::Failed, Some((Failure::LocksLost, reason))),
        (Ok(status), false, None) if status.success() => (TaskState::Succeeded, None),
        (Ok(_), false, None) => (TaskState::Failed, None),
        (Err(error), false, None) => (
            TaskState::Failed,
            Some((
                Failure::Error,
                format!("cannot wait for the process: {error}"),
            )),
        ),
    };
    if let Ok(status) = &status {
        note(&mut log, &format!("exited: {status}; {state}"));
        record.send_modify(|r| {
            r.exit_code = status.code();
            r.signal = status.signal();
        });
    }
    finish(&record, state, error);
}

async fn release(held: HeldLocks, log: &mut Option<std::fs::File>) {
    match held.release().await {
        Ok(()) => note(log, "locks released"),
        Err(error) => note(log, &format!("could not release the locks: {error}")),
    }
}

/// Resolves once `flag` reads true; never if its sender is gone while false.
async fn wait_true(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|f| *f).await.is_err() {
        std::future::pending::<()>().await;
    }
}
