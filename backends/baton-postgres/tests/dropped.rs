//! A call whose caller goes away mid-flight (a timeout, a `select!`, a stopping task) leaves
//! no transaction open on the connection it used: later statements on that connection commit
//! and other connections see them.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{NewJob, Queue, QueueName};
use baton_postgres::PostgresBackend;
use baton_testkit::dropping::{ROUNDS, drop_lock_call};
use sqlx::{Connection, PgConnection, Row};

/// Whether one of the backend's pooled connections stays inside a transaction block, as the
/// server reports it to `observer`. A connection may be seen in a block for a moment while a
/// dropped call's rollback is still on its way, so only one seen there for a whole second
/// counts.
async fn left_in_transaction(backend: &PostgresBackend, observer: &mut PgConnection) -> bool {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(backend.pool())
        .await
        .unwrap();
    for _ in 0..100 {
        let state: String = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut *observer)
            .await
            .unwrap();
        if !state.starts_with("idle in transaction") {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_flight_leaves_no_transaction_open() {
    // Few connections, so that the calls after a drop reuse the connection it left behind.
    let mut config = support::config("d");
    config.max_connections = 2;
    let prefix = config.prefix.to_string();
    let backend = PostgresBackend::connect(config).await.unwrap();
    let mut observer = PgConnection::connect(&support::url()).await.unwrap();
    let mut dropped = 0;
    for round in 0..ROUNDS {
        if drop_lock_call(&backend, round).await {
            dropped += 1;
        }
        assert!(
            !left_in_transaction(&backend, &mut observer).await,
            "a transaction stayed open after round {round}"
        );
    }
    assert!(dropped > 0, "no call was dropped mid-flight");

    // What the handle writes now is committed: another connection sees it.
    let queue = QueueName::new("after-drops").unwrap();
    let id = backend
        .enqueue(&NewJob::new(queue, serde_json::json!(null)).unwrap())
        .await
        .unwrap();
    let table = format!("{prefix}jobs");
    let found: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) AS n FROM {table} WHERE id = $1"
    )))
    .bind(id.get())
    .fetch_one(&mut observer)
    .await
    .unwrap()
    .get("n");
    assert_eq!(found, 1, "job {id} is not visible outside the handle");
    support::drop_tables(backend.pool(), &prefix).await;
}
