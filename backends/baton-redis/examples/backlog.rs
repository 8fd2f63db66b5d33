//! Run with: `cargo run --release -p baton-redis --example backlog -- redis://127.0.0.1:16379 1000000`
//!
//! Measures end-to-end throughput (32 workers reserving one job and completing it, as
//! `baton bench` does) on a queue holding only the jobs run, then on a queue holding a backlog of
//! the given size besides, and prints both with the server's CPU time per job. Cost per job
//! should not depend on the backlog. Before each run the AOF is rewritten and the rewrite waited
//! for, so that no rewrite (a fork copying the data set) runs during the measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_core::{NewJob, Owner, Queue, QueueName, RetryPolicy};
use baton_redis::{KeyPrefix, RedisBackend, RedisConfig};

const WORKERS: usize = 32;
const RUN: u64 = 40_000;
const BATCH: usize = 10_000;

async fn server_cpu(url: &str) -> anyhow::Result<f64> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut connection)
        .await?;
    let mut total = 0.0;
    for line in info.lines() {
        if let Some(value) = line
            .strip_prefix("used_cpu_user:")
            .or_else(|| line.strip_prefix("used_cpu_sys:"))
        {
            total += value.trim().parse::<f64>()?;
        }
    }
    Ok(total)
}

/// Rewrites the AOF and waits for the rewrite to end, so that none (a fork and a child copying
/// the whole data set on a small machine) runs while the workers are measured.
async fn settle(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let _: redis::Value = redis::cmd("BGREWRITEAOF")
        .query_async(&mut connection)
        .await?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut connection)
            .await?;
        let busy = info
            .lines()
            .any(|line| line == "aof_rewrite_in_progress:1" || line == "aof_rewrite_scheduled:1");
        if !busy {
            return Ok(());
        }
    }
}

async fn fill(backend: &RedisBackend, queue: &QueueName, jobs: u64) -> anyhow::Result<()> {
    let job =
        NewJob::new(queue.clone(), serde_json::Value::Null)?.with_retry(RetryPolicy::never())?;
    let batch = vec![job; BATCH];
    let mut left = jobs;
    while left > 0 {
        let size = usize::try_from(left.min(BATCH as u64))?;
        backend.enqueue_batch(&batch[..size]).await?;
        left -= size as u64;
    }
    Ok(())
}

/// Runs `RUN` jobs of `queue` through the workers; returns jobs per second and server CPU
/// microseconds per job.
async fn run(backend: &RedisBackend, url: &str, queue: &QueueName) -> anyhow::Result<(f64, f64)> {
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = server_cpu(url).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..WORKERS {
        let (backend, queue, done) = (backend.clone(), queue.clone(), done.clone());
        tasks.spawn(async move {
            let owner = Owner::new(format!("worker-{n}"))?;
            while done.load(Ordering::SeqCst) < RUN {
                let reserved = backend
                    .reserve(
                        std::slice::from_ref(&queue),
                        &owner,
                        Duration::from_secs(300),
                        1,
                    )
                    .await?;
                for job in reserved {
                    backend
                        .complete(&job.lease, serde_json::Value::Null)
                        .await?;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server_cpu(url).await? - cpu_before;
    let jobs = done.load(Ordering::SeqCst) as f64;
    Ok((jobs / elapsed, cpu * 1e6 / jobs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:16379".to_owned());
    let backlog: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let mut config = RedisConfig::new(&url);
    config.prefix = KeyPrefix::new(format!("backlog-{}:", std::process::id()))?;
    let backend = RedisBackend::connect(config).await?;

    let small = QueueName::new("small")?;
    fill(&backend, &small, RUN).await?;
    settle(&url).await?;
    let (rate, cpu) = run(&backend, &url, &small).await?;
    println!("{{\"backlog\":0,\"jobs_per_second\":{rate:.0},\"server_cpu_us_per_job\":{cpu:.1}}}");

    let big = QueueName::new("big")?;
    let started = Instant::now();
    fill(&backend, &big, backlog + RUN).await?;
    settle(&url).await?;
    println!(
        "{{\"filled\":{},\"seconds\":{:.1}}}",
        backlog + RUN,
        started.elapsed().as_secs_f64()
    );
    let (rate, cpu) = run(&backend, &url, &big).await?;
    println!(
        "{{\"backlog\":{backlog},\"jobs_per_second\":{rate:.0},\"server_cpu_us_per_job\":{cpu:.1}}}"
    );
    Ok(())
}
