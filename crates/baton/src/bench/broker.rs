//! The broker figure: jobs through a broker on loopback to workers of Baton's worker library.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_broker::{BrokerConfig, BrokerStats, Outcome, Worker};

use super::queue::enqueue_in_batches;
use super::{Bench, Figure, rate};

/// How long the jobs may make no progress before the figure is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Enqueues `jobs` jobs (untimed), then starts a broker on the bench's backend and `workers`
/// worker connections, and times until the broker has recorded every completion.
pub(super) async fn through_broker(bench: &Bench) -> anyhow::Result<Figure> {
    let queue = bench.queue("broker")?;
    let jobs = bench.settings.jobs;
    enqueue_in_batches(bench, &queue, jobs, 1000).await?;
    let config = BrokerConfig {
        endpoint: "tcp://127.0.0.1:0".to_owned(),
        name: format!("{}-broker", bench.run_id),
        ..BrokerConfig::default()
    };
    let broker = baton_broker::start(bench.backend.clone(), config)
        .await
        .context("starting the broker")?;
    let started = Instant::now();
    let workers = Worker::new(broker.endpoint(), queue.as_str())
        .concurrency(bench.settings.workers as usize)
        .spawn(|_| async { Outcome::Success(serde_json::Value::Null) });
    let mut last = (0, Instant::now());
    loop {
        let done = BrokerStats::get(&broker.stats().completed);
        if done >= jobs {
            break;
        }
        if done > last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALL_TIMEOUT {
            bail!("the broker completed {done} of {jobs} jobs, then none for {STALL_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    workers.stop().await;
    broker.shutdown().await?;
    let counts = bench.backend.counts(&queue).await?;
    if counts.succeeded != jobs {
        bail!(
            "the backend counts {} succeeded jobs, expected {jobs}",
            counts.succeeded
        );
    }
    Ok(Figure {
        jobs: Some(jobs),
        workers: Some(bench.settings.workers),
        completed: Some(counts.succeeded),
        jobs_per_second: Some(rate(jobs, elapsed)),
        ..bench.figure("broker", elapsed)
    })
}
