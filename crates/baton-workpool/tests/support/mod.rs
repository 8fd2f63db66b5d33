//! What the work-pool tests share: backends by kind, each test on fresh tables (or a fresh
//! file), and bounded waits.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baton_core::Backend;
use baton_sql::TablePrefix;

/// The backends every test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sqlite,
    Postgres,
    Mysql,
    Redis,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Memory,
        Kind::Sqlite,
        Kind::Postgres,
        Kind::Mysql,
        Kind::Redis,
    ];
    pub const DURABLE: [Kind; 4] = [Kind::Sqlite, Kind::Postgres, Kind::Mysql, Kind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
            Kind::Redis => "redis",
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn env_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: start the servers with scripts/services up and source .services/env \
             (or run the tests through scripts/test)"
        )
    })
}

/// Where a fresh backend of `kind` lives: a URL and a table prefix no other test uses.
#[derive(Clone, Debug)]
pub struct Location {
    pub kind: Kind,
    pub url: String,
    pub prefix: String,
}

impl Location {
    pub fn fresh(kind: Kind) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Process ids come round again: a random part keeps a rerun off old tables.
        let prefix = format!(
            "twp{}_{n}_{:06x}_",
            std::process::id(),
            fastrand::u32(..1 << 24)
        );
        let url = match kind {
            Kind::Memory => "memory://".to_owned(),
            Kind::Sqlite => {
                let path: PathBuf =
                    std::env::temp_dir().join(format!("baton-workpool-{prefix}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                format!("sqlite://{}", path.display())
            }
            Kind::Postgres => env_url("BATON_TEST_POSTGRES_URL"),
            Kind::Mysql => env_url("BATON_TEST_MYSQL_URL"),
            Kind::Redis => env_url("BATON_TEST_REDIS_URL"),
        };
        Self { kind, url, prefix }
    }

    /// Opens the backend (a new, empty one for memory).
    pub async fn connect(&self) -> Arc<dyn Backend> {
        let prefix = TablePrefix::new(&self.prefix).unwrap();
        match self.kind {
            Kind::Memory => Arc::new(baton_memory::MemoryBackend::new()),
            Kind::Sqlite => {
                let config = baton_sqlite::SqliteConfig {
                    prefix,
                    ..baton_sqlite::SqliteConfig::new(&self.url)
                };
                Arc::new(baton_sqlite::SqliteBackend::connect(config).await.unwrap())
            }
            Kind::Postgres => {
                let mut config = baton_postgres::PostgresConfig::new(&self.url);
                config.prefix = prefix;
                config.max_connections = 8;
                Arc::new(
                    baton_postgres::PostgresBackend::connect(config)
                        .await
                        .unwrap(),
                )
            }
            Kind::Mysql => {
                let mut config = baton_mysql::MysqlConfig::new(&self.url);
                config.prefix = prefix;
                config.max_connections = 8;
                Arc::new(baton_mysql::MysqlBackend::connect(config).await.unwrap())
            }
            Kind::Redis => {
                let config = baton_redis::RedisConfig {
                    prefix: baton_redis::KeyPrefix::new(&self.prefix).unwrap(),
                    ..baton_redis::RedisConfig::new(&self.url)
                };
                Arc::new(baton_redis::RedisBackend::connect(config).await.unwrap())
            }
        }
    }

    /// Removes the SQLite file or drops the tables with this prefix, giving up (and leaving
    /// the tables) after 20 s: a table another session still uses is not worth a hung test.
    pub async fn clean_up(&self) {
        if tokio::time::timeout(Duration::from_secs(20), self.drop_tables())
            .await
            .is_err()
        {
            eprintln!(
                "left the tables of prefix {} in place: dropping them took too long",
                self.prefix
            );
        }
    }

    async fn drop_tables(&self) {
        match self.kind {
            Kind::Memory => {}
            Kind::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, $1)",
                )
                .bind(&self.prefix)
                .fetch_all(&pool)
                .await
                .unwrap();
                for name in names {
                    let sql = format!("DROP TABLE IF EXISTS \"{name}\" CASCADE");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
            Kind::Mysql => {
                let pool = sqlx::MySqlPool::connect(&self.url).await.unwrap();
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ?",
                )
                .bind(&self.prefix)
                .bind(&self.prefix)
                .fetch_all(&pool)
                .await
                .unwrap();
                for name in names {
                    let sql = format!("DROP TABLE IF EXISTS `{name}`");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
            Kind::Redis => {
                let client = redis::Client::open(self.url.as_str()).unwrap();
                let mut connection = client.get_multiplexed_async_connection().await.unwrap();
                let mut cursor: u64 = 0;
                loop {
                    // Every key opens with a `{prefix…` hash tag.
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{{{}*", self.prefix))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                    if !keys.is_empty() {
                        let () = redis::cmd("DEL")
                            .arg(&keys)
                            .query_async(&mut connection)
                            .await
                            .unwrap();
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
    }
}

/// Sends this test's logs to the test output, filtered by `RUST_LOG` (warnings by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits until `check` returns `Some`, looking every 10 ms, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
