//! Retention: purging finished jobs goes through all of them in short transactions, however
//! many there are, and leaves unfinished and newer jobs alone.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{NewJob, Queue, QueueName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_deletes_every_old_finished_job_across_several_batches() -> anyhow::Result<()> {
    let (backend, prefix) = support::fresh_prefixed("p").await;
    let pool = backend.pool();
    let sql = |text: &str| support::prefixed(&prefix, text);
    // 12,345 jobs that ended long ago: more than two purge batches.
    sqlx::query(sql(
        "INSERT INTO {prefix}jobs (queue, payload, priority, state, attempts, retry, created_at,
             run_at, finished_at)
         SELECT 'q', '{}', 0, 'succeeded', 1, '{}', g, g, g FROM generate_series(1, 12345) g",
    ))
    .execute(pool)
    .await?;
    let queue = QueueName::new("q")?;
    let pending = backend
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!("keep"))?)
        .await?;

    let purged = backend.purge_finished(Duration::from_secs(3600)).await?;
    assert_eq!(purged, 12_345);
    let counts = backend.counts(&queue).await?;
    assert_eq!((counts.succeeded, counts.pending), (0, 1), "{counts:?}");
    assert!(backend.get(pending).await?.is_some());
    assert_eq!(backend.purge_finished(Duration::from_secs(3600)).await?, 0);

    support::drop_tables(pool, &prefix).await;
    Ok(())
}
