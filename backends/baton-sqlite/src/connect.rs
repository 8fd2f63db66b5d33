//! Opening the database: connect options, migrations, and the event poller.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_core::{Error, Result};
use baton_hub::Hub;
use baton_sql::{EventPoller, EventRow, FetchEvents, MigrationFile, from_sqlx, migrator};
use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Mutex, Notify};

use crate::{Durability, Inner, SqliteBackend, SqliteConfig, sql::Statements};

/// The schema, oldest first.
const MIGRATIONS: &[MigrationFile] = &[
    MigrationFile {
        version: 1,
        description: "jobs, locks, claims, heartbeats and events",
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

/// How many times connecting retries the migrations when another process applied them at the
/// same moment.
const MIGRATION_ATTEMPTS: u32 = 5;

impl SqliteBackend {
    /// Opens (creating if missing) the database of `config`, applies the migrations and starts
    /// listening for other processes' job events.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed URL, a path whose directory does not exist, or no
    /// connections; `Backend` if the database cannot be opened or migrated.
    pub async fn connect(config: SqliteConfig) -> Result<Self> {
        if config.max_connections == 0 {
            return Err(Error::invalid("sqlite max_connections must be at least 1"));
        }
        let url = config.url.trim();
        if !url.starts_with("sqlite:") {
            return Err(Error::invalid(format!(
                "sqlite url {url:?} must start with sqlite: (sqlite://path/to/file.db, \
                 sqlite:file.db or sqlite::memory:)"
            )));
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("sqlite url {url:?} is not valid: {e}")))?
            .create_if_missing(true)
            .busy_timeout(config.busy_timeout)
            .synchronous(match config.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            });
        if in_memory {
            options = options.shared_cache(false);
        } else {
            options = options.journal_mode(SqliteJournalMode::Wal);
            let path = options.get_filename().to_path_buf();
            let directory = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            if !directory.is_dir() {
                return Err(Error::invalid(format!(
                    "sqlite database {}: directory {} does not exist",
                    path.display(),
                    directory.display()
                )));
            }
        }
        let mut pool_options = SqlitePoolOptions::new();
        pool_options = if in_memory {
            // An in-memory database lives as long as its one connection.
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool_options.max_connections(config.max_connections)
        };
        let pool_options =
            pool_options.acquire_timeout(config.busy_timeout + Duration::from_secs(25));
        let pool = open(pool_options, options, url, config.busy_timeout).await?;
        migrate(&pool, &config).await?;
        let sql = Statements::new(&config.prefix);
        let start_after: i64 = sqlx::query_scalar(sql.last_event.clone())
            .fetch_one(&pool)
            .await
            .map_err(from_sqlx)?;
        let origin = unique_origin();
        let hub = Arc::new(Hub::default());
        let poller = EventPoller::spawn(
            hub.clone(),
            start_after,
            fetch_events(pool.clone(), sql.clone(), origin.clone()),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                pool,
                sql,
                hub,
                origin,
                writer: Mutex::new(()),
                requests: crate::combine::Requests::default(),
                lock_released: Notify::new(),
                _poller: poller,
            }),
        })
    }
}

/// Opens the pool, trying again while the file is busy, for up to `busy_timeout`.
///
/// Switching a new file to WAL mode takes an exclusive lock, and when several processes open
/// the same new file at once SQLite answers some of them `SQLITE_BUSY` at once instead of
/// waiting in the busy handler (two readers upgrading would deadlock), so the wait is here.
async fn open(
    pool_options: SqlitePoolOptions,
    options: SqliteConnectOptions,
    url: &str,
    busy_timeout: Duration,
) -> Result<sqlx::SqlitePool> {
    let deadline = tokio::time::Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match pool_options.clone().connect_with(options.clone()).await {
            Ok(pool) => return Ok(pool),
            Err(error) if is_busy(&error) && tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(%error, "sqlite database busy while opening; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(error) => {
                return Err(Error::Backend {
                    message: format!("cannot open sqlite database {url}: {error}"),
                    transient: baton_sql::is_transient(&error),
                    source: Some(Box::new(error)),
                });
            }
        }
    }
}

/// Whether `error` is SQLite's "database is locked" (`SQLITE_BUSY`, code 5, or an extended
/// code built on it).
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 5),
        _ => false,
    }
}

/// Applies the migrations, trying again if another process applied them concurrently (SQLite
/// has no migration lock: the loser's bookkeeping insert fails, and on the next try it finds
/// the migration applied).
async fn migrate(pool: &sqlx::SqlitePool, config: &SqliteConfig) -> Result<()> {
    let migrator = migrator(&config.prefix, MIGRATIONS)?;
    let mut attempt = 1;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < MIGRATION_ATTEMPTS => {
                tracing::debug!(%error, attempt, "sqlite migration failed; trying again");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(error) => {
                return Err(Error::Backend {
                    message: format!("cannot migrate sqlite database {}: {error}", config.url),
                    transient: false,
                    source: Some(Box::new(error)),
                });
            }
        }
    }
}

/// A name for this backend's rows in the events table, unique among the processes and
/// handles sharing the file.
fn unique_origin() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}-{}",
        baton_core::Owner::local(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// What [`EventPoller::spawn`] calls to read events after a sequence number.
/// Reads other origins' events for the poller, pruning old rows now and then.
fn fetch_events(pool: sqlx::SqlitePool, sql: Statements, origin: String) -> FetchEvents {
    let polls = Arc::new(AtomicU64::new(0));
    Arc::new(move |after| {
        let (pool, sql, origin, polls) = (pool.clone(), sql.clone(), origin.clone(), polls.clone());
        async move {
            // About once a minute at the slowest poll rate.
            if polls.fetch_add(1, Ordering::Relaxed) % 240 == 239 {
                sqlx::query(sql.prune_events.clone())
                    .bind(crate::millis(crate::EVENT_RETENTION))
                    .execute(&pool)
                    .await
                    .map_err(from_sqlx)?;
            }
            sqlx::query_as::<_, EventRow>(sql.fetch_events.clone())
                .bind(after)
                .bind(origin)
                .fetch_all(&pool)
                .await
                .map_err(from_sqlx)
        }
        .boxed()
    })
}
