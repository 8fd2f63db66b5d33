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
const MIGRATIONS: &[MigrationFile] = &[MigrationFile {
    version: 1,
    description: "jobs, locks, claims, heartbeats and events",
    sql: include_str!("../migrations/0001_initial.sql"),
}];

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
        let pool = pool_options
            .acquire_timeout(config.busy_timeout + Duration::from_secs(25))
            .connect_with(options)
            .await
            .map_err(|error| Error::Backend {
                message: format!("cannot open sqlite database {url}: {error}"),
                transient: baton_sql::is_transient(&error),
                source: Some(Box::new(error)),
            })?;
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
