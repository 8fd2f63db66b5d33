//! The conformance suite against MariaDB/MySQL, each case on its own table prefix, and names
//! that look like SQL staying names.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_core::{Dispatch, JobState, NewJob, Owner, Queue, QueueName};
use baton_mysql::{MysqlBackend, MysqlConfig};
use baton_sql::TablePrefix;
use baton_testkit::conformance::{Harness, run_all};
use futures::StreamExt;
use sqlx::Row;

fn url() -> String {
    std::env::var("BATON_TEST_MYSQL_URL").expect(
        "BATON_TEST_MYSQL_URL is not set: run the tests through scripts/test, which starts the servers",
    )
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A prefix no other case or run uses.
fn fresh_prefix() -> TablePrefix {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    TablePrefix::new(format!("tmy{}_{n}_", std::process::id())).expect("a valid prefix")
}

async fn connect(prefix: TablePrefix) -> MysqlBackend {
    let mut config = MysqlConfig::new(url());
    config.prefix = prefix;
    config.max_connections = 8;
    MysqlBackend::connect(config)
        .await
        .expect("connect to mysql")
}

/// Drops the tables that earlier runs of these tests left behind.
async fn drop_old_test_tables() {
    let pool = sqlx::MySqlPool::connect(&url()).await.expect("connect");
    let mine = format!("tmy{}\\_", std::process::id());
    let rows = sqlx::query(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name LIKE 'tmy%' AND table_name NOT LIKE ?",
    )
    .bind(format!("{mine}%"))
    .fetch_all(&pool)
    .await
    .expect("list old tables");
    for row in rows {
        let name: String = row.get(0);
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let sql = format!("DROP TABLE IF EXISTS `{name}`");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("drop an old table");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_passes_the_conformance_suite() {
    drop_old_test_tables().await;
    run_all(|| async { Harness::real(connect(fresh_prefix()).await) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_apply_the_schema_once_and_hear_each_other() {
    let prefix = fresh_prefix();
    let (first, second) = tokio::join!(connect(prefix.clone()), connect(prefix.clone()));
    let queue = QueueName::new("shared").unwrap();
    let mut wakes = second.wakeups(std::slice::from_ref(&queue)).await.unwrap();
    let id = first
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!(1)).unwrap())
        .await
        .unwrap();
    let within = Duration::from_secs(5);
    let woken = tokio::time::timeout(within, wakes.next()).await;
    assert_eq!(
        woken.expect("the other process was woken"),
        Some(queue.clone())
    );

    let events = second.subscribe(id).await.unwrap();
    let owner = Owner::new("w").unwrap();
    let reserved = first
        .reserve(
            std::slice::from_ref(&queue),
            &owner,
            Duration::from_secs(30),
            1,
        )
        .await
        .unwrap();
    first
        .complete(&reserved[0].lease, serde_json::json!("ok"))
        .await
        .unwrap();
    let states: Vec<JobState> = tokio::time::timeout(within, events.map(|e| e.state).collect())
        .await
        .expect("the other process heard the job end");
    assert_eq!(states, [JobState::Running, JobState::Succeeded]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completions_each_succeed_once_and_a_second_try_loses_its_lease() {
    let backend = std::sync::Arc::new(connect(fresh_prefix()).await);
    let queue = QueueName::new("q").unwrap();
    let jobs: Vec<NewJob> = (0..64)
        .map(|n| NewJob::new(queue.clone(), serde_json::json!(n)).unwrap())
        .collect();
    backend.enqueue_batch(&jobs).await.unwrap();
    let reserved = backend
        .reserve(
            std::slice::from_ref(&queue),
            &Owner::new("w").unwrap(),
            Duration::from_secs(60),
            64,
        )
        .await
        .unwrap();
    assert_eq!(reserved.len(), 64);

    // Every lease completed twice at once: the two calls often share a transaction.
    let mut calls = tokio::task::JoinSet::new();
    for job in reserved.iter().chain(&reserved) {
        let (backend, lease) = (backend.clone(), job.lease.clone());
        calls.spawn(async move { backend.complete(&lease, serde_json::json!("ok")).await });
    }
    let (mut succeeded, mut lost) = (0, 0);
    while let Some(outcome) = calls.join_next().await {
        match outcome.unwrap() {
            Ok(job) => {
                assert_eq!(job.state, JobState::Succeeded);
                succeeded += 1;
            }
            Err(error) if error.is_lease_lost() => lost += 1,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    assert_eq!((succeeded, lost), (64, 64));
    let counts = backend.counts(&queue).await.unwrap();
    assert_eq!((counts.succeeded, counts.running), (64, 0), "{counts:?}");
}
