//! A call whose caller goes away mid-flight (a timeout, a `select!`, a stopping task) loses no
//! connection from the pool and leaves no transaction open on the connection it used: what the
//! handle writes afterwards is committed and other connections see it.

#![allow(clippy::unwrap_used)]

use baton_core::{JobId, NewJob, Queue, QueueName};
use baton_mysql::{MysqlBackend, MysqlConfig};
use baton_sql::TablePrefix;
use baton_testkit::dropping::{ROUNDS, drop_lock_call};
use sqlx::{Connection, MySqlConnection};

fn url() -> String {
    std::env::var("BATON_TEST_MYSQL_URL").expect(
        "BATON_TEST_MYSQL_URL is not set: run the tests through scripts/test, which starts the servers",
    )
}

/// Whether `observer`, another connection, sees job `id` in `table`.
async fn visible(observer: &mut MySqlConnection, table: &str, id: JobId) -> bool {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE id = ?"
    )))
    .bind(id.get())
    .fetch_one(observer)
    .await
    .unwrap();
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_flight_loses_no_connection_and_leaves_no_transaction_open() {
    // Few connections, so that the calls after a drop reuse the connection it left behind.
    let prefix = format!("dropped{}_", std::process::id());
    let mut config = MysqlConfig::new(url());
    config.prefix = TablePrefix::new(prefix.clone()).unwrap();
    config.max_connections = 2;
    let backend = MysqlBackend::connect(config).await.unwrap();
    let mut observer = MySqlConnection::connect(&url()).await.unwrap();
    let table = format!("{prefix}jobs");
    let queue = QueueName::new("after-drops").unwrap();
    let mut dropped = 0;
    for round in 0..ROUNDS {
        if drop_lock_call(&backend, round).await {
            dropped += 1;
        }
        let job = NewJob::new(queue.clone(), serde_json::json!(round)).unwrap();
        let id = backend.enqueue(&job).await.unwrap();
        assert!(
            visible(&mut observer, &table, id).await,
            "job {id}, enqueued after round {round}, is not visible outside the handle"
        );
    }
    assert!(dropped > 0, "no call was dropped mid-flight");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE()",
    )
    .fetch_all(&mut observer)
    .await
    .unwrap();
    for table in tables.iter().filter(|t| t.starts_with(&prefix)) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE `{table}`")))
            .execute(&mut observer)
            .await
            .unwrap();
    }
}
