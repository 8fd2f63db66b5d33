//! Test-only: the backends a process test runs against, opened by URL under a prefix of its
//! own, and what it left there dropped afterwards.
//!
//! The durable ones are SQLite (a file in the temporary directory), PostgreSQL, MariaDB/MySQL
//! and Redis, whose URLs come from `BATON_TEST_POSTGRES_URL`, `BATON_TEST_MYSQL_URL` and
//! `BATON_TEST_REDIS_URL`. A missing variable panics: a test that needs a server fails, it
//! never skips.

mod runner;

pub use runner::Runner;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use baton_core::Backend;
use baton_sql::TablePrefix;

/// The kinds of backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// In process memory: `memory://`.
    Memory,
    /// A SQLite file: `sqlite://…`.
    Sqlite,
    /// PostgreSQL, at `BATON_TEST_POSTGRES_URL`.
    Postgres,
    /// MariaDB or MySQL, at `BATON_TEST_MYSQL_URL`.
    Mysql,
    /// Redis, at `BATON_TEST_REDIS_URL`.
    Redis,
}

impl Kind {
    /// Every kind, memory first.
    pub const ALL: [Self; 5] = [
        Self::Memory,
        Self::Sqlite,
        Self::Postgres,
        Self::Mysql,
        Self::Redis,
    ];

    /// The kinds whose state outlives a process.
    pub const DURABLE: [Self; 4] = [Self::Sqlite, Self::Postgres, Self::Mysql, Self::Redis];

    /// The kind's short name, such as `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
        }
    }

    /// The kind of backend `url` names, by its scheme.
    ///
    /// # Panics
    ///
    /// When the scheme names no backend.
    pub fn of_url(url: &str) -> Self {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("memory") => Self::Memory,
            Some("sqlite") => Self::Sqlite,
            Some("postgres" | "postgresql") => Self::Postgres,
            Some("mysql" | "mariadb") => Self::Mysql,
            Some("redis" | "rediss") => Self::Redis,
            _ => panic!("{url:?} names no backend"),
        }
    }

    /// Where a backend of this kind is: `memory://`, the file `{sqlite_name}.db` in the
    /// temporary directory, or the URL in the server's `BATON_TEST_…_URL` variable.
    ///
    /// # Panics
    ///
    /// When the server's variable is not set.
    pub fn url(self, sqlite_name: &str) -> String {
        match self {
            Self::Memory => "memory://".to_owned(),
            Self::Sqlite => {
                let file = std::env::temp_dir().join(format!("{sqlite_name}.db"));
                format!("sqlite://{}", file.display())
            }
            Self::Postgres => server_url("BATON_TEST_POSTGRES_URL"),
            Self::Mysql => server_url("BATON_TEST_MYSQL_URL"),
            Self::Redis => server_url("BATON_TEST_REDIS_URL"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn server_url(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: source .services/env (scripts/services up starts the \
             servers) before running these tests"
        )
    })
}

/// A durable backend a test runs on, by URL.
#[derive(Clone, Debug)]
pub struct Durable {
    /// What it is.
    pub kind: Kind,
    /// Where it is.
    pub url: String,
}

/// Every durable backend, in the order of [`Kind::DURABLE`]. The SQLite one is the file
/// `baton-{tag}-{pid}.db` in the temporary directory, shared by this process's tests.
///
/// # Panics
///
/// When a server's variable is not set.
pub fn durable_backends(tag: &str) -> Vec<Durable> {
    let sqlite_name = format!("baton-{tag}-{}", std::process::id());
    Kind::DURABLE
        .into_iter()
        .map(|kind| Durable {
            kind,
            url: kind.url(&sqlite_name),
        })
        .collect()
}

/// What every [`fresh_prefix`] of this process under `tag` starts with: `{tag}{pid}_`.
pub fn process_prefix(tag: &str) -> String {
    format!("{tag}{}_", std::process::id())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A table (and key) prefix no other test uses: the [`process_prefix`], a counter and a random
/// part, for process ids come round again. `tag` is a lowercase letter then lowercase letters
/// or digits, short enough to leave room for table names.
pub fn fresh_prefix(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!(
        "{}{n}_{:06x}_",
        process_prefix(tag),
        fastrand::u32(..1 << 24)
    )
}

/// The connection pool size [`connect`] gives a PostgreSQL or MySQL backend.
pub const MAX_CONNECTIONS: u32 = 8;

/// Opens the backend at `url` (a new, empty one for `memory://`), its tables or keys named with
/// `prefix`, PostgreSQL and MySQL with [`MAX_CONNECTIONS`] connections.
///
/// # Panics
///
/// When the prefix is refused or the backend cannot be opened.
pub async fn connect(url: &str, prefix: &str) -> Arc<dyn Backend> {
    connect_with(url, prefix, MAX_CONNECTIONS).await
}

/// [`connect`] with PostgreSQL and MySQL pools of `max_connections`; SQLite keeps its default.
///
/// # Panics
///
/// When the prefix is refused or the backend cannot be opened.
pub async fn connect_with(url: &str, prefix: &str, max_connections: u32) -> Arc<dyn Backend> {
    let kind = Kind::of_url(url);
    let table_prefix = || TablePrefix::new(prefix).expect("a valid table prefix");
    let opened: baton_core::Result<Arc<dyn Backend>> = match kind {
        Kind::Memory => Ok(Arc::new(baton_memory::MemoryBackend::new())),
        Kind::Sqlite => {
            let config = baton_sqlite::SqliteConfig {
                prefix: table_prefix(),
                ..baton_sqlite::SqliteConfig::new(url)
            };
            baton_sqlite::SqliteBackend::connect(config)
                .await
                .map(|backend| Arc::new(backend) as _)
        }
        Kind::Postgres => {
            let config = baton_postgres::PostgresConfig {
                prefix: table_prefix(),
                max_connections,
                ..baton_postgres::PostgresConfig::new(url)
            };
            baton_postgres::PostgresBackend::connect(config)
                .await
                .map(|backend| Arc::new(backend) as _)
        }
        Kind::Mysql => {
            let config = baton_mysql::MysqlConfig {
                prefix: table_prefix(),
                max_connections,
                ..baton_mysql::MysqlConfig::new(url)
            };
            baton_mysql::MysqlBackend::connect(config)
                .await
                .map(|backend| Arc::new(backend) as _)
        }
        Kind::Redis => {
            let config = baton_redis::RedisConfig {
                prefix: baton_redis::KeyPrefix::new(prefix).expect("a valid key prefix"),
                ..baton_redis::RedisConfig::new(url)
            };
            baton_redis::RedisBackend::connect(config)
                .await
                .map(|backend| Arc::new(backend) as _)
        }
    };
    opened.unwrap_or_else(|error| panic!("cannot open the {kind} backend: {error}"))
}

/// Removes what tests left at `url` under every prefix starting with `prefix`: the SQLite
/// file (with its `-wal` and `-shm` files) whatever the prefix, the PostgreSQL or MySQL tables
/// whose names start with it, the Redis keys whose `{prefix…` hash tag does. Nothing for
/// `memory://`.
///
/// # Panics
///
/// When the server cannot be reached or refuses a query.
pub async fn drop_prefixed(url: &str, prefix: &str) {
    match Kind::of_url(url) {
        Kind::Memory => {}
        Kind::Sqlite => {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(url)
                .await
                .expect("connect to PostgreSQL");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables \
                 WHERE schemaname = 'public' AND starts_with(tablename, $1)",
            )
            .bind(prefix)
            .fetch_all(&pool)
            .await
            .expect("list the PostgreSQL tables");
            for table in tables {
                let sql = format!("DROP TABLE IF EXISTS \"{table}\" CASCADE");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect("drop a PostgreSQL table");
            }
        }
        Kind::Mysql => {
            let pool = sqlx::MySqlPool::connect(url)
                .await
                .expect("connect to MySQL");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ?",
            )
            .bind(prefix)
            .bind(prefix)
            .fetch_all(&pool)
            .await
            .expect("list the MySQL tables");
            for table in tables {
                let sql = format!("DROP TABLE IF EXISTS `{table}`");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect("drop a MySQL table");
            }
        }
        Kind::Redis => drop_redis_keys(url, prefix).await,
    }
}

/// [`drop_prefixed`] on every one of `backends`.
///
/// # Panics
///
/// When a server cannot be reached or refuses a query.
pub async fn drop_all(backends: &[Durable], prefix: &str) {
    for backend in backends {
        drop_prefixed(&backend.url, prefix).await;
    }
}

/// Deletes the keys that open with a `{prefix…` hash tag, found with SCAN.
async fn drop_redis_keys(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let pattern = format!("{{{prefix}*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .expect("scan the Redis keys");
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .expect("delete Redis keys");
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
