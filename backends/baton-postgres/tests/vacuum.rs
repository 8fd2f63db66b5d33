//! The backend vacuums its jobs table once it has reserved `vacuum_after` jobs.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use baton_core::{NewJob, Owner, Queue, QueueName};
use baton_postgres::PostgresBackend;
use serde_json::json;
use sqlx::{PgPool, Row};

/// How many times the table was vacuumed by a `VACUUM` command, as the statistics say.
async fn vacuums(pool: &PgPool, table: &str) -> i64 {
    sqlx::query("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = $1")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
        .get("vacuum_count")
}

/// Reserves and completes `n` jobs of `queue`, `per_call` at a time.
async fn run_jobs(backend: &PostgresBackend, queue: &QueueName, n: usize, per_call: usize) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new(queue.clone(), json!(i)).unwrap())
        .collect();
    backend.enqueue_batch(&jobs).await.unwrap();
    let owner = Owner::new("vacuum-test").unwrap();
    let mut done = 0;
    while done < n {
        let reserved = backend
            .reserve(
                std::slice::from_ref(queue),
                &owner,
                Duration::from_secs(60),
                per_call,
            )
            .await
            .unwrap();
        assert!(
            !reserved.is_empty(),
            "the queue ran dry after {done} of {n} jobs"
        );
        for job in reserved {
            backend.complete(&job.lease, json!(null)).await.unwrap();
            done += 1;
        }
    }
}

/// A backend on fresh tables that vacuums after `after` reservations, its table prefix and
/// the name of its jobs table.
async fn backend(tag: &str, after: u64) -> (PostgresBackend, String, String) {
    let mut config = support::config(tag);
    config.vacuum_after = after;
    let prefix = config.prefix.to_string();
    let table = format!("{prefix}jobs");
    (
        PostgresBackend::connect(config).await.unwrap(),
        prefix,
        table,
    )
}

/// Waits until `table` was vacuumed at least once, for at most 30 s.
async fn wait_for_vacuum(pool: &PgPool, table: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while vacuums(pool, table).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no vacuum of {table} within 30 s of its threshold"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_jobs_table_is_vacuumed_once_enough_jobs_were_reserved() {
    let (backend, prefix, table) = backend("vac", 100).await;
    let pool = backend.pool().clone();
    let queue = QueueName::new("q").unwrap();

    run_jobs(&backend, &queue, 99, 10).await;
    assert_eq!(
        vacuums(&pool, &table).await,
        0,
        "vacuumed before the threshold"
    );

    run_jobs(&backend, &queue, 1, 1).await;
    wait_for_vacuum(&pool, &table).await;

    drop(backend);
    support::drop_tables(&pool, &prefix).await;
}

#[tokio::test]
async fn with_vacuum_after_zero_the_backend_leaves_the_table_to_autovacuum() {
    let (backend, prefix, table) = backend("novac", 0).await;
    let pool = backend.pool().clone();
    let queue = QueueName::new("q").unwrap();

    run_jobs(&backend, &queue, 300, 10).await;
    // A vacuum counts in the statistics as soon as it ends; a backend with a threshold of
    // 100 has finished one by now (the test above); this one must not have started any.
    let mut other = support::config("vac");
    other.vacuum_after = 100;
    let other_prefix = other.prefix.to_string();
    let other_table = format!("{other_prefix}jobs");
    let vacuuming = PostgresBackend::connect(other).await.unwrap();
    run_jobs(&vacuuming, &queue, 100, 10).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while vacuums(&pool, &other_table).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the control backend never vacuumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        vacuums(&pool, &table).await,
        0,
        "vacuumed with vacuum_after = 0"
    );

    drop((backend, vacuuming));
    support::drop_tables(&pool, &prefix).await;
    support::drop_tables(&pool, &other_prefix).await;
}
