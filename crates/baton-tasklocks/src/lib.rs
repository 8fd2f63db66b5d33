//! Baton's task locks and task runner: tasks run in parallel as separate processes, each holding
//! only the locks it needs (one per app, one per task type, one for the update step), and those
//! locks die with the task that holds them.
//!
//! A [`TaskRunner`] starts each task as a child process in its own process group, with its own
//! log file (its path in `BATON_TASK_LOG`), once every lock the task declared is held; it renews
//! them while the task runs and frees them the moment the process exits, whatever ended it,
//! SIGKILL included. If the runner itself dies, nobody renews its locks and they expire after
//! their TTL. [`TaskRunner::kill`] sends SIGTERM to the task's process group, then SIGKILL after
//! a grace period. A task whose locks are held waits and says why ("waiting for task 17 (backup
//! of app 42) to finish"), or fails at once if asked not to wait; waiters are served in the order
//! they came ([`FairLocks`]). A task takes a lock for part of its life (the update step) with
//! [`FairLocks`] in process or `baton lock run --lock update -- CMD` from its process.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> baton_core::Result<()> {
//! use std::sync::Arc;
//! use baton_core::Owner;
//! use baton_memory::MemoryBackend;
//! use baton_tasklocks::{RunnerConfig, TaskRunner, TaskSpec, TaskState, app, task_type};
//!
//! let logs = std::env::temp_dir().join(format!("baton-tasklocks-doc-{}", std::process::id()));
//! let runner = TaskRunner::new(
//!     Arc::new(MemoryBackend::new()),
//!     RunnerConfig::new(Owner::new("host-1")?, &logs),
//! )?;
//! let backup = runner.run(
//!     TaskSpec::new("sh")
//!         .args(["-c", "echo backing up app 42"])
//!         .lock(app(42)?)
//!         .lock(task_type("backup")?)
//!         .reason("backup of app 42"),
//! )?;
//! let record = backup.finished().await;
//! assert_eq!(record.state, TaskState::Succeeded);
//! assert!(runner.read_log(record.id)?.contains("backing up app 42"));
//! # let _ = std::fs::remove_dir_all(&logs);
//! # Ok(())
//! # }
//! ```
//!
//! # How this improves on one versioned blob
//!
//! The design this replaces kept every lock in one JSON blob in one database row, updated with a
//! compare-and-set on a version field, after row locks, `LOCK TABLE` (per session, and the pool
//! hands out any session) and lock files (which a crashed task never cleans up) had failed. That
//! works, but:
//!
//! - **Every lock contends on one row.** Taking `app:1` and `app:2` at once makes one of them
//!   retry its compare-and-set. Here each name is its own row (key) in the backend, with its own
//!   compare-and-set, and a set of names is taken all or nothing in one step, so unrelated tasks
//!   never touch the same record.
//! - **A crash leaves its locks behind.** A blob entry stays until someone removes it, so a task
//!   killed with SIGKILL, or a host that died, needs manual cleanup or a guess from its pid. Here
//!   each grant is a lease: the runner frees it when the process exits, and a dead runner's
//!   leases expire on the backend's clock because nobody renews them.
//! - **A deposed holder cannot be told apart.** A version number says the blob changed, not who
//!   holds what. Every grant here carries a fencing token greater than every earlier token of
//!   each of its names, handed to the task as `BATON_FENCING_TOKEN`, so a resource can refuse a
//!   holder whose lease has passed to someone else.
//! - **Waiters see nothing and may starve.** Each lock here stores its holder's reason, shown to
//!   waiters, and waiters stand in a line kept in the backend itself, so a waiter is never
//!   overtaken by one that came later.
//! - **One database.** The same code runs on every backend: in memory, SQLite, PostgreSQL,
//!   MySQL/MariaDB, Redis.
//!
//! # What a task gets, and what to know
//!
//! - Its environment: `BATON_TASK_ID`, `BATON_TASK_LOG`, `BATON_FENCING_TOKEN` and
//!   `BATON_TASK_LOCKS` (its lock names, one a line), plus [`RunnerConfig::env`]. Its standard
//!   output and error go to its log, where the runner also notes what happens to it; the log
//!   can be read while it runs ([`TaskRunner::read_log`]).
//! - When its process exits, the runner kills whatever it left in its process group before
//!   freeing its locks, so nothing of the task runs unlocked.
//! - If its locks are lost (a renewal refused, or renewals failing until the lease comes within
//!   [`LockSettings::stop_margin`] of its expiry), it gets SIGTERM, then SIGKILL after
//!   [`RunnerConfig::kill_grace`], which is at most that margin: it is gone before anyone else
//!   can have them.
//! - Nothing runs in a process killed with SIGKILL: if the runner is, its tasks keep running
//!   while their locks expire. Run the runner under a supervisor that kills its whole control
//!   group (as systemd does by default), and have tasks hand their fencing token to what they
//!   write, so that a deposed holder's writes are refused.
//! - Task records (state, exit code, times, log path) live in the memory of the runner that runs
//!   the task: the backend traits have no store for them. What other processes see of a task is
//!   its locks, whose reason is its description, and its runner's heartbeat.

mod fair;
mod names;
mod runner;
mod task;

pub use fair::{Acquired, Blocked, FairLocks, HeldLocks, LockSettings, Wait};
pub use names::{
    MAX_TASK_LOCK_LEN, QueueEntry, RESERVED_PREFIX, app, check_task_lock, is_internal,
    parse_queue_entry, task_lock, task_type, update,
};
pub use runner::{
    FENCING_TOKEN_ENV, RunnerConfig, TASK_ID_ENV, TASK_LOCKS_ENV, TASK_LOG_ENV, TaskHandle,
    TaskRunner,
};
pub use task::{Failure, TaskId, TaskRecord, TaskSpec, TaskState};
