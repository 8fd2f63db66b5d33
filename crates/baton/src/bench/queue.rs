//! Queue figures: enqueue one at a time, enqueue in batches, and end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{Backend, NewJob, Owner, QueueName, RetryPolicy, WakeStream};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::{Bench, Figure, rate};

/// The lease a bench worker takes on a job: far longer than a no-op job needs.
const LEASE_TTL: Duration = Duration::from_secs(300);
/// How long an idle worker waits for a wake-up before looking again anyway.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long the jobs may make no progress before the figure is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the backend's counts are read while confirming that every job succeeded.
const COUNTS_POLL: Duration = Duration::from_millis(2);

/// Enqueues `jobs` jobs one call at a time, from one task.
pub(super) async fn enqueue_single(bench: &Bench) -> anyhow::Result<Figure> {
    let queue = bench.queue("enqueue-single")?;
    let jobs = bench.settings.jobs;
    let job = no_op_job(&queue)?;
    let started = Instant::now();
    for _ in 0..jobs {
        bench.backend.enqueue(&job).await?;
    }
    let elapsed = started.elapsed();
    drain(bench, &queue, jobs).await?;
    Ok(Figure {
        mode: Some("single".to_owned()),
        jobs: Some(jobs),
        per_second: Some(rate(jobs, elapsed)),
        ..bench.figure("enqueue", elapsed)
    })
}

/// Enqueues `jobs` jobs `batch` at a time, from one task.
pub(super) async fn enqueue_batch(bench: &Bench) -> anyhow::Result<Figure> {
    let queue = bench.queue("enqueue-batch")?;
    let jobs = bench.settings.jobs;
    let started = Instant::now();
    enqueue_in_batches(bench, &queue, jobs).await?;
    let elapsed = started.elapsed();
    drain(bench, &queue, jobs).await?;
    Ok(Figure {
        mode: Some("batch".to_owned()),
        jobs: Some(jobs),
        batch: Some(bench.settings.batch),
        per_second: Some(rate(jobs, elapsed)),
        ..bench.figure("enqueue", elapsed)
    })
}

/// Enqueues `jobs` no-op jobs (not timed), then times `workers` concurrent workers reserving
/// and completing them until the backend counts every one as succeeded.
pub(super) async fn end_to_end(bench: &Bench) -> anyhow::Result<Figure> {
    let queue = bench.queue("end-to-end")?;
    let jobs = bench.settings.jobs;
    enqueue_in_batches(bench, &queue, jobs).await?;
    let drained = drain(bench, &queue, jobs).await?;
    Ok(Figure {
        jobs: Some(jobs),
        workers: Some(bench.settings.workers),
        prefetch: Some(bench.settings.prefetch),
        completed: Some(drained.succeeded),
        jobs_per_second: Some(rate(drained.succeeded, drained.elapsed)),
        ..bench.figure("end_to_end", drained.elapsed)
    })
}

/// A job that does nothing and is never retried.
fn no_op_job(queue: &QueueName) -> anyhow::Result<NewJob> {
    Ok(NewJob::new(queue.clone(), Value::Null)?.with_retry(RetryPolicy::never())?)
}

async fn enqueue_in_batches(bench: &Bench, queue: &QueueName, jobs: u64) -> anyhow::Result<()> {
    let batch = vec![no_op_job(queue)?; bench.settings.batch.max(1)];
    let mut left = jobs;
    while left > 0 {
        let size = usize::try_from(left).map_or(batch.len(), |left| left.min(batch.len()));
        bench.backend.enqueue_batch(&batch[..size]).await?;
        left -= size as u64;
    }
    Ok(())
}

/// What [`drain`] saw.
struct Drained {
    /// From the first worker's start until the backend counted every job as succeeded.
    elapsed: Duration,
    /// Jobs of the queue the backend counted as succeeded then.
    succeeded: u64,
}

/// Runs `workers` workers on `queue` until `expected` jobs were completed and the backend's
/// counts confirm that they all succeeded.
async fn drain(bench: &Bench, queue: &QueueName, expected: u64) -> anyhow::Result<Drained> {
    let completed = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = JoinSet::new();
    let started = Instant::now();
    for index in 0..bench.settings.workers {
        let worker = Worker {
            backend: bench.backend.clone(),
            prefetch: bench.settings.prefetch,
            queue: queue.clone(),
            owner: bench.owner(&format!("bench-worker-{index}"))?,
            expected,
            completed: completed.clone(),
            all_done: all_done.clone(),
            stop: stop_rx.clone(),
        };
        workers.spawn(worker.run());
    }
    let outcome = async {
        wait_for_completions(&mut workers, &all_done, &completed, expected).await?;
        let succeeded = wait_for_counts(bench.backend.as_ref(), queue, expected).await?;
        Ok::<_, anyhow::Error>(Drained {
            elapsed: started.elapsed(),
            succeeded,
        })
    }
    .await;
    let _ = stop_tx.send(true);
    while let Some(joined) = workers.join_next().await {
        joined.context("a bench worker panicked")??;
    }
    outcome
}

async fn wait_for_completions(
    workers: &mut JoinSet<anyhow::Result<()>>,
    all_done: &Notify,
    completed: &AtomicU64,
    expected: u64,
) -> anyhow::Result<()> {
    let mut seen = completed.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            () = all_done.notified() => return Ok(()),
            Some(joined) = workers.join_next() => {
                joined.context("a bench worker panicked")??;
                bail!("a bench worker stopped before every job was done");
            }
            () = tokio::time::sleep(STALL_TIMEOUT) => {
                let now = completed.load(Ordering::SeqCst);
                if now == seen {
                    bail!(
                        "no progress for {}s: {now} of {expected} jobs completed",
                        STALL_TIMEOUT.as_secs()
                    );
                }
                seen = now;
            }
        }
    }
}

/// Reads the queue's counts until `expected` jobs succeeded; returns how many did.
async fn wait_for_counts(
    backend: &dyn Backend,
    queue: &QueueName,
    expected: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + STALL_TIMEOUT;
    loop {
        let counts = backend.counts(queue).await?;
        if counts.succeeded >= expected {
            return Ok(counts.succeeded);
        }
        if Instant::now() >= deadline {
            bail!(
                "workers completed {expected} jobs but the backend counts {counts:?} for {queue}"
            );
        }
        tokio::time::sleep(COUNTS_POLL).await;
    }
}

/// One bench worker: reserve up to `prefetch` jobs, complete them one by one, repeat; wait for
/// a wake-up when idle.
struct Worker {
    backend: Arc<dyn Backend>,
    prefetch: usize,
    queue: QueueName,
    owner: Owner,
    expected: u64,
    completed: Arc<AtomicU64>,
    all_done: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) -> anyhow::Result<()> {
        let queues = [self.queue.clone()];
        // Opened before the first look for work, so that no wake falls between the two.
        let mut wakeups = Some(self.backend.wakeups(&queues).await?);
        while !*self.stop.borrow() {
            let reserved = self
                .backend
                .reserve(&queues, &self.owner, LEASE_TTL, self.prefetch)
                .await?;
            if reserved.is_empty() {
                tokio::select! {
                    woke = next_wake(&mut wakeups) => {
                        if !woke {
                            wakeups = None;
                        }
                    }
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    changed = self.stop.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                    }
                }
                continue;
            }
            for job in reserved {
                self.backend.complete(&job.lease, Value::Null).await?;
                if self.completed.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
                    self.all_done.notify_one();
                }
            }
        }
        Ok(())
    }
}

/// Waits for the next wake-up; `false` if the stream ended. Without a stream, waits forever
/// (the caller's poll timer takes over).
async fn next_wake(wakeups: &mut Option<WakeStream>) -> bool {
    match wakeups {
        Some(stream) => stream.next().await.is_some(),
        None => std::future::pending().await,
    }
}
