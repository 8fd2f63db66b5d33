//! Queue figures: enqueue one at a time, enqueue in batches, and end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{Backend, NewJob, Owner, QueueName, Reserved, RetryPolicy, WakeStream};
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
/// Jobs per `enqueue_batch` call and per `reserve` call while filling a backlog.
const FILL_BATCH: usize = 1000;

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
    drain(bench, &queue, jobs, bench.settings.prefetch).await?;
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
    enqueue_in_batches(bench, &queue, jobs, bench.settings.batch).await?;
    let elapsed = started.elapsed();
    drain(bench, &queue, jobs, bench.settings.prefetch).await?;
    Ok(Figure {
        mode: Some("batch".to_owned()),
        jobs: Some(jobs),
        batch: Some(bench.settings.batch),
        per_second: Some(rate(jobs, elapsed)),
        ..bench.figure("enqueue", elapsed)
    })
}

/// Enqueues `jobs` no-op jobs (not timed), then times `workers` concurrent workers reserving
/// and completing as many, until the last completion is acknowledged; the backend's counts
/// must then show that many more jobs succeeded.
///
/// With a backlog, the queue is first topped up to the settings' numbers of finished and
/// pending jobs (not timed); the workers then take jobs from the head of the queue, so the
/// queue stays as deep during the figure, and its finished jobs pile up as they would in use.
pub(super) async fn end_to_end(bench: &Bench) -> anyhow::Result<Figure> {
    let settings = &bench.settings;
    let queue = match &settings.queue {
        Some(name) => QueueName::new(name.as_str())?,
        None => bench.queue("end-to-end")?,
    };
    let jobs = settings.jobs;
    fill_backlog(bench, &queue).await?;
    let before = bench.backend.counts(&queue).await?;
    enqueue_in_batches(bench, &queue, jobs, settings.batch).await?;
    let drained = drain(bench, &queue, jobs, settings.prefetch).await?;
    Ok(Figure {
        jobs: Some(jobs),
        workers: Some(settings.workers),
        prefetch: Some(settings.prefetch),
        completed: Some(drained.succeeded),
        jobs_per_second: Some(rate(drained.succeeded, drained.elapsed)),
        backlog_pending: Some(before.pending).filter(|&n| n > 0),
        backlog_finished: Some(before.succeeded + before.failed + before.canceled)
            .filter(|&n| n > 0),
        ..bench.figure("end_to_end", drained.elapsed)
    })
}

/// Tops `queue` up to the settings' backlog, not timed: finished jobs made the way workers
/// make them (enqueued, reserved, completed), then pending ones.
async fn fill_backlog(bench: &Bench, queue: &QueueName) -> anyhow::Result<()> {
    let settings = &bench.settings;
    if settings.backlog_finished == 0 && settings.backlog_pending == 0 {
        return Ok(());
    }
    let counts = bench.backend.counts(queue).await?;
    let finished = counts.succeeded + counts.failed + counts.canceled;
    let missing = settings.backlog_finished.saturating_sub(finished);
    if missing > 0 {
        tracing::info!(%queue, jobs = missing, "filling the backlog with finished jobs");
        enqueue_in_batches(bench, queue, missing, FILL_BATCH).await?;
        drain(bench, queue, missing, FILL_BATCH).await?;
    }
    let pending = bench.backend.counts(queue).await?.pending;
    let missing = settings.backlog_pending.saturating_sub(pending);
    if missing > 0 {
        tracing::info!(%queue, jobs = missing, "filling the backlog with pending jobs");
        enqueue_in_batches(bench, queue, missing, FILL_BATCH).await?;
    }
    Ok(())
}

/// A job that does nothing and is never retried.
fn no_op_job(queue: &QueueName) -> anyhow::Result<NewJob> {
    Ok(NewJob::new(queue.clone(), Value::Null)?.with_retry(RetryPolicy::never())?)
}

pub(super) async fn enqueue_in_batches(
    bench: &Bench,
    queue: &QueueName,
    jobs: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let batch = vec![no_op_job(queue)?; batch.max(1)];
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
    /// From the first worker's start until the last completion was acknowledged.
    elapsed: Duration,
    /// How many more jobs of the queue the backend counted as succeeded then.
    succeeded: u64,
}

/// Runs `workers` workers, each reserving up to `prefetch` jobs per call, on `queue` until
/// `expected` jobs were completed and the backend's counts confirm that as many more jobs
/// succeeded.
async fn drain(
    bench: &Bench,
    queue: &QueueName,
    expected: u64,
    prefetch: usize,
) -> anyhow::Result<Drained> {
    let baseline = bench.backend.counts(queue).await?.succeeded;
    let completed = Arc::new(AtomicU64::new(0));
    let untaken = Arc::new(AtomicU64::new(expected));
    let all_done = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = JoinSet::new();
    let started = Instant::now();
    for index in 0..bench.settings.workers {
        let worker = Worker {
            backend: bench.backend.clone(),
            prefetch,
            queue: queue.clone(),
            owner: bench.owner(&format!("bench-worker-{index}"))?,
            expected,
            untaken: untaken.clone(),
            completed: completed.clone(),
            all_done: all_done.clone(),
            stop: stop_rx.clone(),
        };
        workers.spawn(worker.run());
    }
    let outcome = async {
        wait_for_completions(&mut workers, &all_done, &completed, expected).await?;
        let elapsed = started.elapsed();
        let succeeded = wait_for_counts(bench.backend.as_ref(), queue, baseline + expected).await?;
        Ok::<_, anyhow::Error>(Drained {
            elapsed,
            succeeded: succeeded - baseline,
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

/// One bench worker: reserve up to `prefetch` jobs, complete them one by one (the last one
/// together with the next reservation, through `complete_and_reserve`), repeat; wait for a
/// wake-up when idle. Workers share out the `expected` jobs beforehand, so that together they
/// complete exactly that many even when the queue holds more.
struct Worker {
    backend: Arc<dyn Backend>,
    prefetch: usize,
    queue: QueueName,
    owner: Owner,
    expected: u64,
    /// Of the `expected` jobs, how many no worker has set out to reserve yet.
    untaken: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    all_done: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) -> anyhow::Result<()> {
        let queues = [self.queue.clone()];
        // Opened before the first look for work, so that no wake falls between the two.
        let mut wakeups = Some(self.backend.wakeups(&queues).await?);
        let mut in_hand: Vec<Reserved> = Vec::new();
        while !*self.stop.borrow() {
            if in_hand.is_empty() {
                let share = take_share(&self.untaken, self.prefetch);
                if share == 0 {
                    // Every job is someone's: wait for the stop.
                    if self.stop.changed().await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                in_hand = self
                    .backend
                    .reserve(&queues, &self.owner, LEASE_TTL, share)
                    .await?;
                self.untaken
                    .fetch_add((share - in_hand.len()) as u64, Ordering::SeqCst);
            }
            if in_hand.is_empty() {
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
            // Every job but the last completes on its own; the last one's completion also
            // reserves the next share.
            let last = in_hand.pop().expect("jobs in hand");
            for job in in_hand.drain(..) {
                self.backend.complete(&job.lease, Value::Null).await?;
                self.count_completed();
            }
            let share = take_share(&self.untaken, self.prefetch);
            if share == 0 {
                self.backend.complete(&last.lease, Value::Null).await?;
                self.count_completed();
                continue;
            }
            let (completed, next) = self
                .backend
                .complete_and_reserve(
                    &last.lease,
                    Value::Null,
                    &queues,
                    &self.owner,
                    LEASE_TTL,
                    share,
                )
                .await?;
            completed?;
            self.count_completed();
            self.untaken
                .fetch_add((share - next.len()) as u64, Ordering::SeqCst);
            in_hand = next;
        }
        Ok(())
    }

    fn count_completed(&self) {
        if self.completed.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
            self.all_done.notify_one();
        }
    }
}

/// Takes up to `most` of the `untaken` jobs; returns how many it took.
fn take_share(untaken: &AtomicU64, most: usize) -> usize {
    let most = most as u64;
    let before = untaken
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            Some(left - left.min(most))
        })
        .unwrap_or(0);
    usize::try_from(before.min(most)).unwrap_or(0)
}

/// Waits for the next wake-up; `false` if the stream ended. Without a stream, waits forever
/// (the caller's poll timer takes over).
async fn next_wake(wakeups: &mut Option<WakeStream>) -> bool {
    match wakeups {
        Some(stream) => stream.next().await.is_some(),
        None => std::future::pending().await,
    }
}
