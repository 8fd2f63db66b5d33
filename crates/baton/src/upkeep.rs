//! What `baton serve` does besides answering requests: every [`MAINTENANCE_INTERVAL`], hand out
//! again the jobs whose lease expired, delete finished jobs past retention and return the
//! accounts of dead sync processes to their pools (the reaper); every [`OBSERVE_INTERVAL`],
//! read each master's leader and each pool's claims per owner into the metrics and into
//! [`Observed`] (the pools' rebalance history); every [`SAMPLE_INTERVAL`], sample the job totals
//! for the dashboard's charts.
//!
//! Every step is idempotent and safe to run in several servers at once: the backend decides,
//! atomically, what expired and who is dead.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{Backend, PoolName};
use baton_master::MasterControl;
use baton_metrics::{Leader, Metrics, PoolClaims};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::insight::{Observed, SAMPLE_INTERVAL, held};

/// How often the maintenance steps run.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// How often leaders and claims are read into the metrics.
pub const OBSERVE_INTERVAL: Duration = Duration::from_secs(5);

/// What the loop looks after.
#[derive(Clone, Debug, Default)]
pub struct Upkeep {
    /// How long finished jobs are kept.
    pub retention: Duration,
    /// The claim pools to reap and report.
    pub pools: Vec<PoolName>,
}

/// Runs the loop until `stop` turns true.
pub fn spawn(
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    observed: Arc<Observed>,
    upkeep: Upkeep,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut maintain_ticks = tokio::time::interval(MAINTENANCE_INTERVAL);
        maintain_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut observe_ticks = tokio::time::interval(OBSERVE_INTERVAL);
        observe_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample_ticks = tokio::time::interval(SAMPLE_INTERVAL);
        sample_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = maintain_ticks.tick() => maintain(backend.as_ref(), &upkeep).await,
                _ = observe_ticks.tick() => {
                    observe(&backend, &metrics, &observed, &upkeep.pools).await;
                }
                _ = sample_ticks.tick() => observed.sample(backend.as_ref()).await,
                () = stopped(stop.clone()) => return,
            }
        }
    })
}

/// One maintenance pass. Failures are logged, never fatal: the next pass tries again.
pub async fn maintain(backend: &dyn Backend, upkeep: &Upkeep) {
    match backend.requeue_expired().await {
        Ok(jobs) if !jobs.is_empty() => {
            tracing::info!(count = jobs.len(), "requeued jobs whose lease expired");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot requeue expired jobs"),
    }
    match backend.purge_finished(upkeep.retention).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "purged finished jobs past retention"),
        Err(err) => tracing::warn!(error = %err, "cannot purge finished jobs"),
    }
    for pool in &upkeep.pools {
        // The members pool records which sync processes are registered; reaping it drops the
        // dead ones, as a live sync process's own pass would.
        let members = baton_sync::members_pool(pool);
        for pool in std::iter::once(pool.clone()).chain(members) {
            match backend.reap_dead(&pool).await {
                Ok(items) if !items.is_empty() => tracing::info!(
                    %pool,
                    count = items.len(),
                    "returned the items of dead owners to the pool"
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!(%pool, error = %err, "cannot reap the pool"),
            }
        }
    }
}

/// Reads each master's leader and each pool's claims per owner into `metrics`, and the pools
/// into `observed`.
async fn observe(
    backend: &Arc<dyn Backend>,
    metrics: &Metrics,
    observed: &Observed,
    pools: &[PoolName],
) {
    match MasterControl::new(backend.clone()).status(&[]).await {
        Ok(masters) => metrics.observe_leaders(masters.into_iter().map(|master| {
            let leader = master.holder.map(|holder| Leader {
                owner: holder.owner.to_string(),
                token: holder.token.get(),
            });
            (master.lock_name.to_string(), leader)
        })),
        Err(err) => tracing::warn!(error = %err, "cannot read the masters' leaders"),
    }
    let mut claims = Vec::with_capacity(pools.len());
    for pool in pools {
        match baton_sync::pool_status(backend.as_ref(), backend.as_ref(), pool).await {
            Ok(status) => {
                claims.push(PoolClaims {
                    pool: pool.to_string(),
                    unclaimed: status.unclaimed as u64,
                    held: held(&status)
                        .into_iter()
                        .map(|(owner, accounts)| (owner, accounts as u64))
                        .collect(),
                });
                observed.push_pool(status);
            }
            Err(err) => tracing::warn!(%pool, error = %err, "cannot read the pool's claims"),
        }
    }
    metrics.set_claims(&claims);
}

/// Completes once `stop` turns true.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once shutdown was sent.
    let _ = stop.wait_for(|stopped| *stopped).await;
}
