//! Baton on PostgreSQL through sqlx: all five coordination traits on one database, with
//! `FOR UPDATE SKIP LOCKED` reservations and `LISTEN/NOTIFY` dispatch between processes.
//!
//! ```no_run
//! use std::time::Duration;
//! use baton_core::{NewJob, Owner, Queue, QueueName};
//! use baton_postgres::{PostgresBackend, PostgresConfig};
//!
//! # async fn example() -> baton_core::Result<()> {
//! let backend = PostgresBackend::connect(PostgresConfig::new("postgres://baton@localhost/baton")).await?;
//! let queue = QueueName::new("emails")?;
//! backend.enqueue(&NewJob::new(queue.clone(), serde_json::json!({"to": "a@b.c"}))?).await?;
//! let owner = Owner::new("worker-1")?;
//! for job in backend.reserve(&[queue], &owner, Duration::from_secs(30), 10).await? {
//!     backend.complete(&job.lease, serde_json::json!("sent")).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Tables
//!
//! Every table name starts with the configured [`TablePrefix`] (`baton_` by default); the schema
//! is `migrations/0001_initial.sql`, `0002_reserve_walk_index.sql`, `0003_queue_upkeep.sql`,
//! `0004_heartbeat_beat_at.sql`, `0005_paused_queues.sql` and `0006_job_trace_parent.sql`,
//! applied on connect.
//! Times are `BIGINT` milliseconds since the epoch, always computed by the server (`now()`),
//! never by the client.
//!
//! - `jobs`: one row per job (the columns of [`baton_sql::JobRow`]); `history` is `jsonb` and
//!   attempts are appended and finished in SQL; `lease_token` is the last token granted. Indexes:
//!   a partial index on pending jobs `(queue COLLATE "C", priority DESC, run_at, id)` that
//!   reservation walks in order (finished jobs never enter it; only reservation matches the
//!   queue under that collation, so the planner cannot prefer sorting a queue its statistics do
//!   not know yet), running jobs by lease expiry, finished jobs by `finished_at` (purge),
//!   `(queue, id)` (last) and `(queue, state)` (counts; `queues` skips from queue to queue
//!   along either). The table asks autovacuum to come at 1% of dead rows instead of 20%: the
//!   pending index keeps an entry of every job reserved since the last vacuum ahead of the
//!   pending ones, and reservation walks over them.
//! - `locks`: one row per name ever locked: `owner` (NULL when free), `token` (the last granted),
//!   `expires_at`, `reason`, `since`, and a `version` bumped on every change. Renew and release
//!   are compare-and-set on `(name, owner, token)`.
//! - `claims`: one row per `(pool, item)`: `owner` (NULL when unclaimed), `token`, `expires_at`,
//!   `seq` (FIFO order of unclaimed items, from the `claims_seq` sequence) and `present` (false
//!   for a removed item's tombstone, which keeps its token so a re-added item's tokens increase).
//! - `heartbeats`: `owner`, `expires_at`, `beat_at` (when the last beat arrived).
//!
//! # Notifications
//!
//! Job events and wake-ups go to this process's subscribers at once, after the commit, and to
//! other processes through `NOTIFY` on the channels `<prefix>events` (compact JSON naming its
//! origin, so that a process skips its own: the events of one statement as one array, split
//! only to stay under PostgreSQL's 8000-byte payload limit, or one event from
//! `Dispatch::publish`) and `<prefix>wake` (a queue name, once per statement), sent in the same
//! transaction as the change. Lock releases notify `<prefix>unlock`; a waiting
//! `acquire` also looks again every 25 ms. A background task holds a dedicated `LISTEN`
//! connection; after it drops, the task listens again, wakes every queue and lock waiter (their
//! notifications may have been lost), and reads the state of every job subscribed to in this
//! process, so that a subscriber hears of a change made during the gap (the job's current
//! state, once; nothing it already saw is repeated).
//!
//! # Group commit
//!
//! Concurrent `enqueue`, `reserve` and `complete` calls of one backend share statements: each
//! is queued to a batching task, which runs every request that arrived while its previous batch
//! ran as one multi-row statement (one commit), and answers each caller. Before it runs a
//! batch, the task waits up to 200 µs for the callers of the previous batch to come back, so
//! that workers running short jobs share one statement instead of taking turns in two halves;
//! after two waits in a row that ran out, it stops waiting for the next 64 batches. Fencing stays per job:
//! each completed row is matched against its own lease, and a caller whose row did not match
//! gets `LeaseLost`.
//!
//! # Vacuum
//!
//! Every reserved job leaves a dead entry at the head of the pending index, which later
//! reservations of its queue step over until a vacuum removes it. Autovacuum comes at most once
//! a minute, so the backend also vacuums the jobs table itself after every
//! [`PostgresConfig::vacuum_after`] jobs it reserved (25,000 by default), at most every 5 s and
//! one at a time, cost-limited like autovacuum (with five times its budget), with `SKIP_LOCKED`
//! so that it never queues behind another vacuum. It needs to own the table (or be a member of its owner
//! role); otherwise it logs that once and leaves the table to autovacuum. Set `vacuum_after` to
//! 0 to turn it off.

mod batch;
mod claim;
mod dispatch;
mod heartbeat;
mod lock;
mod queue;
mod sql;
mod vacuum;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use baton_core::Result;
use baton_hub::Hub;
use baton_sql::{MigrationFile, from_sqlx};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use baton_sql::TablePrefix;

/// The schema, as migrations applied in order on connect.
const MIGRATIONS: &[MigrationFile] = &[
    MigrationFile {
        version: 1,
        description: "initial schema",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    MigrationFile {
        version: 2,
        description: "reserve walk index",
        sql: include_str!("../migrations/0002_reserve_walk_index.sql"),
    },
    MigrationFile {
        version: 3,
        description: "queue upkeep",
        sql: include_str!("../migrations/0003_queue_upkeep.sql"),
    },
    MigrationFile {
        version: 4,
        description: "heartbeat beat time",
        sql: include_str!("../migrations/0004_heartbeat_beat_at.sql"),
    },
    MigrationFile {
        version: 5,
        description: "paused queues",
        sql: include_str!("../migrations/0005_paused_queues.sql"),
    },
    MigrationFile {
        version: 6,
        description: "job trace parent",
        sql: include_str!("../migrations/0006_job_trace_parent.sql"),
    },
];

/// How to reach the database and name the tables.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// A `postgres://user:password@host:port/database` URL.
    pub url: String,
    /// The prefix of every table name.
    pub prefix: TablePrefix,
    /// The most connections the pool opens (the `LISTEN` connection is extra).
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with a transient error.
    pub acquire_timeout: Duration,
    /// Vacuum the jobs table after this process reserved this many jobs since its last vacuum
    /// (at most every 5 s, one at a time); 0 leaves it to autovacuum alone.
    /// See "Vacuum" in the crate documentation.
    pub vacuum_after: u64,
}

impl PostgresConfig {
    /// The defaults for `url`: prefix `baton_`, 16 connections, a 10 s acquire timeout, a
    /// vacuum after every 25,000 reserved jobs.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: TablePrefix::default(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            vacuum_after: 25_000,
        }
    }
}

/// The PostgreSQL backend: a cheap, cloneable handle to a connection pool and the listener.
#[derive(Clone, Debug)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The pool, the statements, this backend's id in notifications (so that it skips its
    /// own) and the vacuum's count of reserved jobs, as the batching tasks share them.
    shared: batch::Shared,
    batchers: batch::Batchers,
    hub: Arc<Hub>,
    /// Signalled when a lock is released (here or, through the listener, elsewhere).
    lock_changed: Arc<Notify>,
    listener: JoinHandle<()>,
    vacuum: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(vacuum) = &self.vacuum {
            vacuum.abort();
        }
    }
}

impl PostgresBackend {
    /// Connects, applies the migrations and starts listening for notifications.
    ///
    /// # Errors
    ///
    /// `Backend` if the database cannot be reached or a migration fails.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        // Each statement keeps the plan it was prepared with. Left to choose, PostgreSQL plans
        // the batched reservations and completions afresh at every execution (a queue it has no
        // statistics for looks nearly empty, so a plan for its name always seems cheaper): a
        // fifth of the server's time under load. Every statement is written so that its
        // generic plan is the right one (`tests/explain.rs` checks the hot ones).
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(from_sqlx)?
            .options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(from_sqlx)?;
        baton_sql::migrator(&config.prefix, MIGRATIONS)?
            .run(&pool)
            .await
            .map_err(|error| from_sqlx(sqlx::Error::Migrate(Box::new(error))))?;
        let hub = Arc::new(Hub::default());
        let lock_changed = Arc::new(Notify::new());
        let origin = dispatch::new_origin();
        let channels = dispatch::Channels::new(&config.prefix);
        let sql = Arc::new(sql::Statements::new(&config.prefix));
        let listener = dispatch::spawn_listener(
            &pool,
            channels,
            sql.job_states.clone(),
            origin,
            hub.clone(),
            lock_changed.clone(),
        )
        .await?;
        let (reserved, vacuum) =
            vacuum::spawn(&pool, config.prefix.table("jobs"), config.vacuum_after);
        let shared = batch::Shared {
            pool,
            sql,
            origin,
            reserved,
        };
        let batchers = batch::Batchers::spawn(&shared);
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                batchers,
                hub,
                lock_changed,
                listener,
                vacuum,
            }),
        })
    }

    /// What the batching code needs.
    fn shared(&self) -> &batch::Shared {
        &self.inner.shared
    }

    /// The connection pool, for tests and tools that need to look at the tables.
    pub fn pool(&self) -> &PgPool {
        &self.inner.shared.pool
    }
}

/// The error of a call whose batching task is gone (the runtime is shutting down).
fn batcher_gone() -> baton_core::Error {
    baton_core::Error::transient(std::io::Error::other("the batching task stopped"))
}

/// A TTL or delay in whole milliseconds, as bound to SQL.
fn millis(duration: Duration) -> i64 {
    baton_core::duration_millis(duration)
}
