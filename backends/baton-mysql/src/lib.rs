//! Baton on MySQL 8 and MariaDB 10.6+ through sqlx: all five coordination traits in InnoDB
//! tables, jobs reserved with `SELECT … FOR UPDATE SKIP LOCKED`, expiry on the server's clock.
//!
//! ```no_run
//! use std::time::Duration;
//! use baton_core::{NewJob, Owner, Queue, QueueName};
//! use baton_mysql::{MysqlBackend, MysqlConfig};
//!
//! # async fn run() -> baton_core::Result<()> {
//! let backend = MysqlBackend::connect(MysqlConfig::new("mysql://baton:secret@localhost/baton")).await?;
//! let queue = QueueName::new("emails")?;
//! backend.enqueue(&NewJob::new(queue.clone(), serde_json::json!({"to": "a@b.c"}))?).await?;
//! let owner = Owner::new("worker-1")?;
//! for reserved in backend.reserve(&[queue], &owner, Duration::from_secs(30), 10).await? {
//!     backend.complete(&reserved.lease, serde_json::json!("sent")).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Tables
//!
//! Every table name starts with the configured [`TablePrefix`] (`baton_` by default); names are
//! `VARCHAR(200)` in `utf8mb4_bin`, times `BIGINT` milliseconds since the epoch from the server's
//! clock (`CURRENT_TIMESTAMP(3)`, session time zone `+00:00`), JSON `LONGTEXT`.
//!
//! - `jobs`: one row per job (the columns of [`baton_sql::JobRow`]); `lease_token` is the last
//!   token granted. Indexes: `due (state, queue, priority DESC, run_at, id)` for reservation
//!   (MySQL has no partial indexes, so the state leads), `expiry (state, lease_expires_at)`,
//!   `finished (finished_at)`, `by_queue (queue, id)`, `queue_state (queue, state)`.
//! - `locks`: one row per name ever locked: `owner` (NULL when free), `token` (the last granted),
//!   `expires_at`, `reason`, `since`, and `version`, incremented on every change. Renew and
//!   release are compare-and-set on (name, owner, token).
//! - `claims`: one row per (pool, item) ever added: `present` (0 once removed: the row stays
//!   as a tombstone so tokens keep increasing), `owner` (NULL when unclaimed), `token`,
//!   `expires_at`, `seq` (FIFO order of unclaimed items, from the `counters` row `claim_seq`).
//! - `heartbeats`: `owner`, `expires_at`.
//! - `events`: job state changes for other processes: `seq`, `origin` (a random id per backend
//!   value), `job_id`, `queue`, `state`, `attempts`, `created_at`; rows older than ten minutes
//!   are purged by the poller.
//!
//! # Group commit
//!
//! Concurrent `reserve` calls of one backend share a transaction, and so do concurrent
//! `complete` calls: one caller at a time runs every request of its kind queued meanwhile and
//! commits once. Reservations of the same queues and lease time take the due jobs in one scan
//! and are dealt them in turn, each up to its own count, and one `UPDATE` starts every attempt
//! with each job's own owner; completions lock their rows in one statement, in id order, and
//! each is still checked against its own lease.
//!
//! # Notifications
//!
//! Waiters in the same process (on the same [`MysqlBackend`] or a clone) hear of a change at
//! once. Other processes read the `events` table with a [`baton_sql::EventPoller`]: the
//! worst-case latency is [`baton_sql::POLL_MAX`] (250 ms) plus one query. A
//! [`wake`](baton_core::Dispatch::wake) travels the same way, as a `pending` row for job 0. Lock
//! waiters in other processes look again every 50 ms.
//!
//! # Servers
//!
//! Tested on MariaDB 10.11; written for MySQL 8 as well (no `RETURNING`, no MariaDB-only
//! syntax). The `due` index needs descending index parts (MySQL 8, MariaDB 10.8+); older
//! servers ignore `DESC` and sort the due jobs of a queue on every reservation. Where `innodb_autoinc_lock_mode` is 2 (MySQL 8's default) a multi-row insert may
//! get non-consecutive ids, so [`enqueue_batch`](baton_core::Queue::enqueue_batch) then inserts
//! its jobs one statement each, still in one transaction. Deadlocks and lock wait timeouts
//! roll a transaction back whole; it is tried again up to five times before a transient
//! `Backend` error is returned. The schema is applied under a `GET_LOCK` of its own, since
//! MariaDB answers sqlx's `GET_LOCK(…, -1)` at once without waiting.

mod claim;
mod combine;
mod dispatch;
mod heartbeat;
mod job_logic;
mod jobs;
mod lock;
mod queue;
mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Error, Result};
use baton_hub::Hub;
use baton_sql::{Connect, Detached, EventPoller, MigrationFile, TablePrefix, from_sqlx};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, Row};

use crate::sql::Statements;

/// The schema, applied in order on connect.
const MIGRATIONS: &[MigrationFile] = &[
    MigrationFile {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    MigrationFile {
        version: 2,
        description: "heartbeat beat time",
        sql: include_str!("../migrations/0002_heartbeat_beat_at.sql"),
    },
    MigrationFile {
        version: 3,
        description: "paused queues",
        sql: include_str!("../migrations/0003_paused_queues.sql"),
    },
    MigrationFile {
        version: 4,
        description: "job trace parent",
        sql: include_str!("../migrations/0004_job_trace_parent.sql"),
    },
];

/// How to reach the database and name the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MysqlConfig {
    /// A `mysql://user:password@host:port/database` URL.
    pub url: String,
    /// Prefix of every table name.
    pub prefix: TablePrefix,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with a transient error.
    pub acquire_timeout: Duration,
}

impl MysqlConfig {
    /// A configuration for `url` with the default prefix (`baton_`), 10 connections and a
    /// 10-second acquire timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: TablePrefix::default(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Baton on MySQL or MariaDB: a cheap, cloneable handle to one connection pool, each of whose
/// calls runs to its end even if its caller stops waiting (see [`Detached`]).
pub type MysqlBackend = Detached<MysqlStore>;

/// Baton's tables in a MySQL or MariaDB database, called directly. A call whose future is
/// dropped mid-statement can leave its connection waiting for an answer that never comes, lost
/// to the pool; [`MysqlBackend`] runs every call in a task of its own so that this cannot happen.
#[derive(Clone)]
pub struct MysqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: MySqlPool,
    statements: Statements,
    hub: Arc<Hub>,
    origin: String,
    lock_released: tokio::sync::Notify,
    /// Whether multi-row inserts get consecutive auto-increment ids
    /// (`innodb_autoinc_lock_mode` below 2).
    consecutive_ids: bool,
    /// Completions waiting to share the next transaction.
    completions: combine::Combiner<combine::Completion>,
    /// Reservations waiting to share the next transaction.
    reservations: combine::Combiner<combine::Reservation>,
    _poller: EventPoller,
}

impl std::fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlStore")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

/// How long a starting process waits for another one to finish applying the schema.
const MIGRATION_LOCK_WAIT_SECONDS: i64 = 60;

/// Applies the migrations under a named server lock of our own: sqlx takes
/// `GET_LOCK(…, -1)`, which MariaDB answers at once with NULL instead of waiting, so two
/// processes starting together would both apply the schema.
async fn migrate(pool: &MySqlPool, prefix: &TablePrefix) -> Result<()> {
    let migrator = baton_sql::migrator(prefix, MIGRATIONS)?;
    let mut conn = pool.acquire().await.map_err(from_sqlx)?;
    let lock_name = format!("baton_migrate_{prefix}");
    let got: Option<i64> = sqlx::query("SELECT GET_LOCK(?, ?)")
        .bind(&lock_name)
        .bind(MIGRATION_LOCK_WAIT_SECONDS)
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(from_sqlx)?;
    if got != Some(1) {
        return Err(Error::Backend {
            message: format!("timed out waiting for the migration lock {lock_name}"),
            transient: true,
            source: None,
        });
    }
    let applied = migrator.run(&mut *conn).await.map_err(|error| match error {
        sqlx::migrate::MigrateError::Execute(error) => from_sqlx(error),
        other => Error::permanent(other),
    });
    let released = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock_name)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx);
    applied?;
    released.map(|_| ())
}

impl Connect for MysqlStore {
    type Config = MysqlConfig;

    fn connect(config: MysqlConfig) -> impl std::future::Future<Output = Result<Self>> {
        Self::connect(config)
    }
}

impl MysqlStore {
    /// Connects, applies the migrations (safe when several processes start at once) and starts
    /// polling other processes' events.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed URL; `Backend` if the server cannot be reached or the
    /// schema cannot be applied.
    pub async fn connect(config: MysqlConfig) -> Result<Self> {
        let options = MySqlConnectOptions::from_str(&config.url)
            .map_err(|e| Error::invalid(format!("mysql url: {e}")))?;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET time_zone = '+00:00'").await?;
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    // Every transaction here is short: a row lock held longer than this belongs
                    // to a stuck client, and the waiter's transaction is retried.
                    conn.execute("SET SESSION innodb_lock_wait_timeout = 5")
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(from_sqlx)?;
        migrate(&pool, &config.prefix).await?;
        let statements = Statements::new(config.prefix.clone());
        let autoinc_mode: i64 = sqlx::query("SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED)")
            .fetch_one(&pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(from_sqlx)?;
        let start_after: i64 = sqlx::query(statements.get(sql::MAX_EVENT_SEQ))
            .fetch_one(&pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(from_sqlx)?;
        let origin = format!("{:016x}", fastrand::u64(..));
        let hub = Arc::new(Hub::default());
        let fetch = dispatch::fetcher(pool.clone(), &statements, origin.clone(), start_after);
        let poller = EventPoller::spawn(hub.clone(), start_after, fetch);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                statements,
                hub,
                origin,
                lock_released: tokio::sync::Notify::new(),
                consecutive_ids: autoinc_mode < 2,
                completions: combine::Combiner::default(),
                reservations: combine::Combiner::default(),
                _poller: poller,
            }),
        })
    }

    /// The connection pool, for callers that keep their own tables beside Baton's.
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    fn stmt(&self, text: &'static str) -> sqlx::SqlStr {
        self.inner.statements.get(text)
    }

    fn stmt_in(&self, text: &'static str, n: usize) -> sqlx::SqlStr {
        self.inner.statements.get_in(text, n)
    }
}
