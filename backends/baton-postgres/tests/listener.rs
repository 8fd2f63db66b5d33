//! The notification listener after its connection drops: it listens again, and a subscriber
//! still learns of a change made while nothing was listening.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{Dispatch, JobState, NewJob, Owner, Queue, QueueName};
use baton_postgres::{PostgresBackend, PostgresConfig};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, PgPool};

/// Sets whether anyone may connect to `database`.
async fn allow_connections(admin: &PgPool, database: &str, allow: bool) {
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allow}"
    )))
    .execute(admin)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_learns_of_a_change_made_while_its_listener_was_disconnected() {
    // A database of its own, since the test refuses new connections to it for a while.
    let admin = PgPool::connect(&support::url()).await.unwrap();
    let database = format!("baton_gap_{}", std::process::id());
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let url = {
        let server = support::url();
        let (server, _) = server
            .rsplit_once('/')
            .expect("the test URL names a database");
        format!("{server}/{database}")
    };
    // Two backends: `watcher` learns of `worker`'s changes only through notifications.
    let watcher = PostgresBackend::connect(PostgresConfig::new(format!(
        "{url}?application_name=watcher"
    )))
    .await
    .unwrap();
    let worker = PostgresBackend::connect(PostgresConfig::new(url))
        .await
        .unwrap();
    let queue = QueueName::new("gap").unwrap();
    let id = worker
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!(1)).unwrap())
        .await
        .unwrap();
    let reserved = worker
        .reserve(
            &[queue],
            &Owner::new("w").unwrap(),
            Duration::from_secs(60),
            1,
        )
        .await
        .unwrap();
    let mut events = watcher.subscribe(id).await.unwrap();

    // Cut the watcher off, its listener included, and keep it from reconnecting.
    allow_connections(&admin, &database, false).await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = 'watcher'",
    )
    .bind(&database)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!terminated.is_empty(), "no connection of the watcher found");
    let gone = async {
        loop {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'watcher'",
            )
            .bind(&database)
            .fetch_one(&admin)
            .await
            .unwrap();
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .expect("the watcher's connections are gone within 10s");

    // The job ends while nothing listens: its notification reaches no one.
    worker
        .complete(&reserved[0].lease, serde_json::json!("done"))
        .await
        .unwrap();
    allow_connections(&admin, &database, true).await;

    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            if event.state.is_terminal() {
                return Some(event);
            }
        }
        None
    })
    .await
    .expect("the subscriber hears of the completion within 20s of the listener's return");
    assert_eq!(ended.unwrap().state, JobState::Succeeded);

    drop(watcher);
    drop(worker);
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
