//! The query plans of the hot statements, on a table of 1,000,000 finished and 100,000 pending
//! jobs.
//!
//! `EXPLAIN QUERY PLAN` of `due_jobs` (what `reserve` runs per queue) reads, on that table:
//!
//! ```text
//! SEARCH baton_jobs USING COVERING INDEX baton_jobs_due (queue=?)
//! ```
//!
//! a search of the partial index over pending jobs, already in reservation order (no
//! `USE TEMP B-TREE FOR ORDER BY`), so the million finished jobs are never read; and
//! `expired_jobs` (what `requeue_expired` runs) reads
//! `SEARCH baton_jobs USING INDEX baton_jobs_running (lease_expires_at<?)`.

use std::time::{Duration, Instant};

use baton_core::{Owner, Queue, QueueName};

use crate::{SqliteBackend, SqliteConfig};

async fn plan(backend: &SqliteBackend, statement: &sqlx::SqlStr) -> String {
    let text = format!("EXPLAIN QUERY PLAN {}", statement.as_str());
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(text))
        .bind("q")
        .bind(i64::MAX)
        .bind(10_i64)
        .fetch_all(backend.pool())
        .await
        .unwrap();
    rows.into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn reserving_among_a_million_finished_jobs_searches_only_pending_ones() {
    let directory = std::env::temp_dir().join(format!("baton-sqlite-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let url = format!("sqlite://{}", directory.join("plan.db").display());
    let backend = SqliteBackend::connect(SqliteConfig::new(url))
        .await
        .unwrap();
    let started = Instant::now();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100000) \
         INSERT INTO baton_jobs (queue, payload, priority, state, retry, created_at, run_at, \
         finished_at) SELECT 'q', '{}', i % 3, CASE WHEN i <= 1000000 THEN 'succeeded' \
         ELSE 'pending' END, '{}', 0, i, CASE WHEN i <= 1000000 THEN i END FROM n",
    )
    .execute(backend.pool())
    .await
    .unwrap();
    println!("filled 1,100,000 jobs in {:?}", started.elapsed());

    let due = plan(&backend, &backend.inner.sql.due_jobs).await;
    println!("due_jobs: {due}");
    assert!(due.contains("INDEX baton_jobs_due (queue=?)"), "{due}");
    assert!(!due.contains("TEMP B-TREE"), "{due}");
    let expired = plan(&backend, &backend.inner.sql.expired_jobs).await;
    println!("expired_jobs: {expired}");
    assert!(expired.contains("INDEX baton_jobs_running"), "{expired}");

    let queue = QueueName::new("q").unwrap();
    let owner = Owner::new("w").unwrap();
    let started = Instant::now();
    let reserved = backend
        .reserve(&[queue], &owner, Duration::from_secs(30), 10)
        .await
        .unwrap();
    println!("reserved 10 in {:?}", started.elapsed());
    assert_eq!(reserved.len(), 10);
    assert!(reserved.iter().all(|r| r.job.priority.0 == 2));
    drop(backend);
    let _ = std::fs::remove_dir_all(&directory);
}
