//! The lock figure: latency of acquire+release pairs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{Acquire, Lock, LockRequest};
use tokio::task::JoinSet;

use super::{Bench, Figure, rate, round};

/// The lease a bench lock is taken for: far longer than one acquire+release takes.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// Runs `lock_ops` acquire+release pairs spread over `lock_tasks` concurrent tasks, each on
/// its own lock name, and reports the rate and the latency of a pair.
pub(super) async fn acquire_release(bench: &Bench) -> anyhow::Result<Figure> {
    let ops = bench.settings.lock_ops;
    let tasks = u64::from(bench.settings.lock_tasks.max(1));
    let mut running = JoinSet::new();
    let started = Instant::now();
    for index in 0..tasks {
        let share = ops / tasks + u64::from(index < ops % tasks);
        let request = LockRequest::new(
            [bench.lock_name(&format!("lock-{index}"))?],
            bench.owner(&format!("bench-lock-{index}"))?,
            LOCK_TTL,
        )?
        .with_reason("baton bench")?;
        let backend = bench.backend.clone();
        running.spawn(async move {
            let mut samples = Vec::with_capacity(usize::try_from(share).unwrap_or(0));
            for _ in 0..share {
                let pair = Instant::now();
                let lease = match backend.acquire(&request).await? {
                    Acquire::Granted(lease) => lease,
                    Acquire::Busy(holders) => {
                        bail!(
                            "lock {:?} is unexpectedly held: {holders:?}",
                            request.names()
                        )
                    }
                };
                // `Claim` has a `release` too; name the trait.
                Lock::release_lock(backend.as_ref(), &lease).await?;
                samples.push(pair.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        });
    }
    let mut samples = Vec::new();
    while let Some(joined) = running.join_next().await {
        samples.extend(joined.context("a bench lock task panicked")??);
    }
    let elapsed = started.elapsed();
    samples.sort_unstable();
    Ok(Figure {
        ops: Some(ops),
        tasks: Some(bench.settings.lock_tasks),
        per_second: Some(rate(ops, elapsed)),
        p50_us: Some(percentile_us(&samples, 0.50)),
        p99_us: Some(percentile_us(&samples, 0.99)),
        ..bench.figure("lock", elapsed)
    })
}

/// The nearest-rank percentile `p` of sorted `samples`, in microseconds.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let sample = sorted[rank.clamp(1, sorted.len()) - 1];
    round(sample.as_secs_f64() * 1e6, 1)
}
