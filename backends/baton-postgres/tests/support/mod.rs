//! What the test binaries share: the server's URL, fresh backends on their own table prefix,
//! and dropping those tables afterwards.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use baton_postgres::{PostgresBackend, PostgresConfig, TablePrefix};
use sqlx::{AssertSqlSafe, PgPool, Row};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The URL of the test server.
pub fn url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "BATON_TEST_POSTGRES_URL is not set: run the tests through scripts/test, which \
             starts the servers"
        )
    })
}

/// The prefix shared by every table this test process creates under `tag`.
pub fn process_prefix(tag: &str) -> String {
    format!("t{}_{tag}", std::process::id())
}

/// A fresh configuration with a prefix of its own under `tag`.
pub fn config(tag: &str) -> PostgresConfig {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut config = PostgresConfig::new(url());
    config.prefix = TablePrefix::new(format!("{}{n}_", process_prefix(tag))).unwrap();
    config.max_connections = 8;
    config
}

/// A backend on fresh tables of its own.
pub async fn fresh(tag: &str) -> PostgresBackend {
    PostgresBackend::connect(config(tag)).await.unwrap()
}

/// A backend on fresh tables of its own, and their prefix.
pub async fn fresh_prefixed(tag: &str) -> (PostgresBackend, String) {
    let config = config(tag);
    let prefix = config.prefix.to_string();
    (PostgresBackend::connect(config).await.unwrap(), prefix)
}

/// `text` with `{prefix}` replaced by `prefix`, as SQL to run.
pub fn prefixed(prefix: &str, text: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(text.replace("{prefix}", prefix))
}

/// Drops every table and sequence whose name starts with `prefix`.
pub async fn drop_tables(pool: &PgPool, prefix: &str) {
    let rows = sqlx::query(
        "SELECT relname::text AS name, relkind::text AS kind FROM pg_class
         WHERE relkind IN ('r', 'S') AND relnamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for row in rows {
        let name: String = row.get("name");
        let kind: String = row.get("kind");
        if !name.starts_with(prefix) {
            continue;
        }
        let what = if kind == "S" { "SEQUENCE" } else { "TABLE" };
        sqlx::query(AssertSqlSafe(format!(
            "DROP {what} IF EXISTS \"{name}\" CASCADE"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
}
