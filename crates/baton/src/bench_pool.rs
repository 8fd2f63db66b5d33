//! The work-pool figure of `baton bench`: jobs per second through a
//! [`WorkPool`](baton_workpool::WorkPool) with a cluster-wide limit of 32, each job an empty
//! handler, so that the figure is the pool's own cost (slots, reservations, outcomes) on the
//! backend.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use baton_core::Backend;
use baton_workpool::{EnqueueOptions, PoolConfig, WorkPool};
use tokio::time::Instant;

/// The cluster-wide limit the figure runs under.
pub const MAX_PARALLELISM: usize = 32;

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct PoolRun {
    /// Jobs run.
    pub jobs: u64,
    /// From the member's start to the last job's success.
    pub elapsed: Duration,
}

/// Enqueues `jobs` empty jobs to a fresh pool named `name`, then times one member running them
/// all, at most [`MAX_PARALLELISM`] at once.
///
/// # Errors
///
/// The backend failed, or the jobs did not all succeed within a generous bound.
pub async fn run(backend: Arc<dyn Backend>, name: &str, jobs: u64) -> anyhow::Result<PoolRun> {
    let mut config = PoolConfig::new(name)?;
    config.max_parallelism = MAX_PARALLELISM;
    config.lease_ttl = Duration::from_secs(30);
    config.poll_interval = Duration::from_millis(50);
    let pool = WorkPool::new(backend.clone(), config)?;
    pool.register("noop", |_, _| async { Ok(serde_json::Value::Null) });
    let mut left = jobs;
    while left > 0 {
        let chunk = left.min(10_000);
        pool.enqueue_batch((0..chunk).map(|_| {
            (
                "noop".to_owned(),
                serde_json::Value::Null,
                EnqueueOptions::new(),
            )
        }))
        .await
        .context("cannot enqueue the work-pool jobs")?;
        left -= chunk;
    }
    let started = Instant::now();
    let member = pool.start();
    let bound = Duration::from_secs(600);
    loop {
        let counts = backend.counts(pool.work_queue()).await?;
        if counts.succeeded >= jobs {
            break;
        }
        if started.elapsed() > bound {
            bail!(
                "only {} of {jobs} work-pool jobs succeeded in {bound:?}",
                counts.succeeded
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    member.shutdown().await;
    Ok(PoolRun { jobs, elapsed })
}
