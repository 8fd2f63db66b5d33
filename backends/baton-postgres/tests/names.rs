//! Names reach SQL only as bound parameters: a name that looks like SQL is just a name.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{
    Claim, ItemId, JobState, Lock, LockName, LockRequest, NewJob, Owner, PoolName, Queue, QueueName,
};
use baton_postgres::PostgresBackend;
use sqlx::Row;

const EVIL: &str = "x'; DROP TABLE jobs; --";

async fn table_count(backend: &PostgresBackend, prefix: &str) -> i64 {
    sqlx::query("SELECT count(*) AS n FROM pg_tables WHERE starts_with(tablename, $1)")
        .bind(prefix)
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lock_pool_or_item_named_like_sql_is_just_a_name() -> anyhow::Result<()> {
    let config = support::config("n");
    let prefix = config.prefix.to_string();
    let backend = PostgresBackend::connect(config).await?;
    let tables = table_count(&backend, &prefix).await;

    let queue = QueueName::new(EVIL)?;
    let id = backend
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!(EVIL))?)
        .await?;
    let owner = Owner::new(EVIL)?;
    let reserved = backend
        .reserve(
            std::slice::from_ref(&queue),
            &owner,
            Duration::from_secs(30),
            1,
        )
        .await?;
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].job.id, id);
    let job = backend
        .complete(&reserved[0].lease, serde_json::json!(EVIL))
        .await?;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.queue.as_str(), EVIL);
    assert_eq!(backend.last(&queue).await?.map(|job| job.id), Some(id));

    let request = LockRequest::new(
        [LockName::new(EVIL)?],
        owner.clone(),
        Duration::from_secs(30),
    )?
    .with_reason(EVIL)?;
    let lease = backend.acquire(&request).await?.granted().expect("granted");
    assert_eq!(backend.holders().await?[0].reason, EVIL);
    backend.release_lock(&lease).await?;

    let pool = PoolName::new(EVIL)?;
    backend.add(&pool, &[ItemId::new(EVIL)?]).await?;
    let claim = backend
        .claim(&pool, &owner, Duration::from_secs(30))
        .await?
        .expect("claimed");
    assert_eq!(claim.item.as_str(), EVIL);
    backend.release_claim(&claim).await?;

    assert_eq!(table_count(&backend, &prefix).await, tables);
    support::drop_tables(backend.pool(), &prefix).await;
    Ok(())
}
