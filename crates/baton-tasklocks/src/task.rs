//! What a task is: its specification, and the record of what became of it.

use std::fmt;
use std::path::PathBuf;

use baton_core::{Error, FencingToken, LockName, Result, Timestamp};
use serde::{Deserialize, Serialize};

use crate::fair::Wait;
use crate::names::check_task_lock;

/// A task's number, unique within its runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its locks.
    Waiting,
    /// Its process runs, holding its locks.
    Running,
    /// Its process exited with status 0.
    Succeeded,
    /// Its process exited otherwise, could not start, could not have its locks, or lost them.
    Failed,
    /// It was killed through the runner.
    Killed,
}

impl TaskState {
    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Killed)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Killed => "killed",
        })
    }
}

/// Why a task failed without its exit status saying so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Its locks stayed held (or others were in line first) for as long as it would wait.
    LocksBusy,
    /// Its locks were lost while it ran, so it was stopped.
    LocksLost,
    /// Something else went wrong: the backend failed, its log or program could not be opened.
    Error,
}

/// A task to run: a command, the locks it holds for its whole life, and why.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) locks: Vec<LockName>,
    pub(crate) reason: String,
    pub(crate) wait: Wait,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log_path: Option<PathBuf>,
}

impl TaskSpec {
    /// A task running `program`, holding no locks yet, waiting for them as long as it takes.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            locks: Vec::new(),
            reason: String::new(),
            wait: Wait::Forever,
            env: Vec::new(),
            log_path: None,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds a lock the task holds for its whole life, such as [`app`](crate::app)`(42)`.
    pub fn lock(mut self, name: LockName) -> Self {
        self.locks.push(name);
        self
    }

    /// Says what the task does, such as "backup of app 42": waiters are told
    /// "waiting for task 17 (backup of app 42) to finish".
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// How long to wait for the locks (by default, as long as it takes).
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Sets an environment variable of the task's process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes the task's log to `path` instead of a file in the runner's log directory.
    pub fn log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// The command line: the program, then its arguments.
    pub fn command(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.program.is_empty() {
            return Err(Error::invalid("a task needs a program to run"));
        }
        if self.locks.is_empty() {
            return Err(Error::invalid("a task needs at least one lock"));
        }
        for lock in &self.locks {
            check_task_lock(lock)?;
        }
        Ok(())
    }
}

/// What became of a task, as its runner knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its number.
    pub id: TaskId,
    /// The command line.
    pub command: Vec<String>,
    /// The locks it holds for its whole life, sorted.
    pub locks: Vec<LockName>,
    /// What it does.
    pub reason: String,
    /// Where it is in its life.
    pub state: TaskState,
    /// Why it waits, while it waits: "waiting for task 17 (backup of app 42) to finish".
    pub waiting_for: Option<String>,
    /// Its process id, once started.
    pub pid: Option<u32>,
    /// The fencing token of its locks, once held.
    pub token: Option<FencingToken>,
    /// Its exit code, if it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Why it failed, when no exit code says it.
    pub failure: Option<Failure>,
    /// What went wrong, in words, when `failure` is set.
    pub error: Option<String>,
    /// When it was handed to the runner (this host's clock).
    pub created_at: Timestamp,
    /// When its process started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Its log file: the runner's notes and the process's output.
    pub log_path: PathBuf,
}

impl TaskRecord {
    /// What waiters are told about it: "task 17 (backup of app 42)".
    pub fn description(&self) -> String {
        if self.reason.is_empty() {
            format!("task {} ({})", self.id, self.command.join(" "))
        } else {
            format!("task {} ({})", self.id, self.reason)
        }
    }
}
