//! Baton's embedded default backend: all five coordination traits on one SQLite file through
//! sqlx, correct across every process that opens the same file.
//!
//! ```no_run
//! use std::time::Duration;
//! use baton_core::{NewJob, Owner, Queue, QueueName};
//! use baton_sqlite::{SqliteBackend, SqliteConfig};
//!
//! # async fn example() -> baton_core::Result<()> {
//! let backend = SqliteBackend::connect(SqliteConfig::new("sqlite://baton.db")).await?;
//! let queue = QueueName::new("emails")?;
//! backend.enqueue(&NewJob::new(queue.clone(), serde_json::json!({"to": "a@b.c"}))?).await?;
//! let owner = Owner::new("worker-1")?;
//! let reserved = backend.reserve(&[queue], &owner, Duration::from_secs(30), 1).await?;
//! backend.complete(&reserved[0].lease, serde_json::json!("sent")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Tables
//!
//! Created by `migrations/0001_initial.sql` on connect, each name starting with the configured
//! [`TablePrefix`] (`baton_` by default); times are `INTEGER` milliseconds since the epoch read
//! from SQLite's clock (the host's: every process sharing a file runs on one host), JSON is
//! `TEXT`:
//!
//! - `jobs`: one row per job, the columns of [`baton_sql::JobRow`]; `lease_token` is the last
//!   token granted, `history` the JSON array of attempts. A partial index over pending jobs
//!   only, `(queue, priority DESC, run_at, id) WHERE state = 'pending'`, serves `reserve`, so
//!   finished jobs cost it nothing; partial indexes over running jobs by lease expiry and
//!   finished jobs by end time serve `requeue_expired` and `purge_finished`.
//! - `locks`: one row per name ever locked: `owner` (`NULL` when free), `token` (the last
//!   granted), `expires_at`, `reason`, `since`, and `version`, incremented on every change.
//!   Renew and release are compare-and-set on name, owner and token.
//! - `claims`: one row per item ever added to a pool: `present` (0 for a removed item, kept so
//!   its tokens go on increasing), `owner`, `token`, `expires_at`, and `seq`, the order of
//!   unclaimed items.
//! - `heartbeats`: each owner's expiry.
//! - `events`: job state changes for other processes, pruned after [`EVENT_RETENTION`].
//!
//! # Transactions and durability
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`, so a transaction that reads and then
//! writes never fails to upgrade its lock; within one process writers also queue on an async
//! mutex, so they wait fairly instead of in SQLite's busy handler, and across processes they
//! wait up to [`SqliteConfig::busy_timeout`]. The database runs in WAL mode, so readers never
//! block the writer. See [`Durability`] for what a crash may lose.
//!
//! Reservations and completions that queue for the write turn share one transaction: whoever
//! gets the turn runs every request queued meanwhile, each judged on its own (a stale lease
//! fails only its own completion), and commits once for all of them.
//!
//! # Notifications
//!
//! Waiters and subscribers in this process hear of a change as soon as it commits. Other
//! processes read the `events` table with a [`baton_sql::EventPoller`]: at worst
//! [`baton_sql::POLL_MAX`] (250 ms) plus one query after the commit. A lock waiter looks again at
//! once when a lock of this process is released, and every [`LOCK_RECHECK`] otherwise.

mod claim;
mod combine;
mod connect;
mod dispatch;
mod heartbeat;
mod jobs;
mod lock;
mod queue;
mod sql;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{JobEvent, Result};
use baton_hub::Hub;
pub use baton_sql::TablePrefix;
use baton_sql::{EventPoller, from_sqlx};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard, Notify};

/// How long a lock waiter sleeps at most before looking again for a lock another process may
/// have released or let expire.
pub const LOCK_RECHECK: Duration = Duration::from_millis(25);

/// How long rows of the `events` table are kept for other processes to read.
pub const EVENT_RETENTION: Duration = Duration::from_secs(10 * 60);

/// How hard SQLite works to keep a commit through a power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: a crash of the application or of any process loses
    /// nothing committed, but a power loss or an operating-system crash may lose the last few
    /// transactions (the database itself stays consistent). Several times faster than
    /// [`Durability::Full`]; the default.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is on disk before it returns, so even a power loss
    /// loses nothing committed.
    Full,
}

/// How to open a SQLite database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    /// `sqlite://path/to/file.db`, `sqlite:file.db` or `sqlite::memory:` (one database private
    /// to this backend, on a single connection).
    pub url: String,
    /// The prefix of every table name.
    pub prefix: TablePrefix,
    /// The most connections in the pool (1 for an in-memory database).
    pub max_connections: u32,
    /// How long a write waits for another process's write transaction before failing with a
    /// transient `Backend` error.
    pub busy_timeout: Duration,
    /// What a crash may lose.
    pub durability: Durability,
}

impl SqliteConfig {
    /// The defaults for the database at `url`: prefix `baton_`, 4 connections, a 5 s busy
    /// timeout, [`Durability::Normal`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for SqliteConfig {
    /// `sqlite://baton.db` with the defaults of [`SqliteConfig::new`].
    fn default() -> Self {
        Self {
            url: "sqlite://baton.db".to_owned(),
            prefix: TablePrefix::default(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
        }
    }
}

/// The SQLite backend: a cheap, cloneable handle to one connection pool.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    pool: SqlitePool,
    sql: sql::Statements,
    hub: Arc<Hub>,
    /// Names this backend's rows in the events table, so its poller skips them.
    origin: String,
    /// Serializes this process's write transactions.
    writer: Mutex<()>,
    /// Reservations and completions waiting to share the next write transaction.
    requests: combine::Requests,
    /// Signalled when this backend frees a lock.
    lock_released: Notify,
    _poller: EventPoller,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

/// A write transaction, begun with `BEGIN IMMEDIATE`, holding this process's write turn.
pub(crate) struct Write<'a> {
    pub(crate) tx: Transaction<'static, Sqlite>,
    /// The database's time when the transaction began, in ms.
    pub(crate) now: i64,
    pub(crate) turn: MutexGuard<'a, ()>,
}

impl Write<'_> {
    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(from_sqlx)
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.map_err(from_sqlx)
    }
}

impl SqliteBackend {
    /// Begins a write transaction and reads the database's time in it.
    pub(crate) async fn write(&self) -> Result<Write<'_>> {
        let turn = self.inner.writer.lock().await;
        self.begin(turn).await
    }

    /// Begins a write transaction in `turn`, this process's write turn, and reads the
    /// database's time in it.
    pub(crate) async fn begin<'a>(&'a self, turn: MutexGuard<'a, ()>) -> Result<Write<'a>> {
        let mut tx = baton_sql::begin(&self.inner.pool, Some("BEGIN IMMEDIATE")).await?;
        let now: i64 = sqlx::query_scalar(self.inner.sql.now.clone())
            .fetch_one(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        Ok(Write { tx, now, turn })
    }

    /// Records `event` for other processes inside `write`.
    pub(crate) async fn record_event(&self, write: &mut Write<'_>, event: &JobEvent) -> Result<()> {
        sqlx::query(self.inner.sql.insert_event.clone())
            .bind(self.inner.origin.clone())
            .bind(event.job.get())
            .bind(event.queue.as_str().to_owned())
            .bind(event.state.as_str())
            .bind(i64::from(event.attempts))
            .execute(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    pub(crate) fn sql(&self) -> &sql::Statements {
        &self.inner.sql
    }
}

/// `duration` in whole milliseconds, as SQLite's `INTEGER`.
pub(crate) fn millis(duration: Duration) -> i64 {
    baton_core::duration_millis(duration)
}
