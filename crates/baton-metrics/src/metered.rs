//! [`Metered`]: a backend whose every call is timed, counted and traced.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton_core::{
    Acquire, Beat, Claim, ClaimLease, Dispatch, EventStream, Heartbeat, ItemId, ItemStatus, Job,
    JobEvent, JobFilter, JobId, JobLease, JobPage, Lock, LockHolder, LockLease, LockRequest,
    NewJob, Owner, PoolName, Queue, QueueCounts, QueueName, Reserved, Result, Retry, WakeStream,
};
use serde_json::Value;
use tracing::Instrument;

use crate::Metrics;

/// `B` with every call timed and counted in [`Metrics`] and run inside a `backend` span.
/// Clones share `B` and the metrics.
#[derive(Debug)]
pub struct Metered<B: ?Sized> {
    inner: Arc<B>,
    metrics: Arc<Metrics>,
}

impl<B: ?Sized> Clone for Metered<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<B: ?Sized> Metered<B> {
    /// Wraps `inner`, counting in `metrics`.
    pub fn new(inner: Arc<B>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped backend, whose calls are not counted.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    /// The metrics this backend counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs `call` in a `backend` span and counts it.
    async fn observe<T>(
        &self,
        call: &'static str,
        future: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            "backend",
            call,
            otel.name = format!("backend {call}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let started = Instant::now();
        let outcome = future.instrument(span.clone()).await;
        if let Err(error) = &outcome {
            span.record("error", tracing::field::display(error));
            span.record("otel.status_code", "ERROR");
        }
        self.metrics
            .call(call, outcome.is_ok(), started.elapsed().as_secs_f64());
        outcome
    }
}

#[async_trait]
impl<B: Heartbeat + ?Sized> Heartbeat for Metered<B> {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        self.observe("beat", self.inner.beat(owner, ttl)).await
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        self.observe("alive", self.inner.alive(owner)).await
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        self.observe("dead_owners", self.inner.dead_owners()).await
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        self.observe("last_beat", self.inner.last_beat(owner)).await
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        self.observe("forget", self.inner.forget(owner)).await
    }
}

#[async_trait]
impl<B: Claim + ?Sized> Claim for Metered<B> {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        self.observe("add", self.inner.add(pool, items)).await
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        self.observe("remove", self.inner.remove(pool, items)).await
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        self.observe("items", self.inner.items(pool)).await
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        self.observe("claim", self.inner.claim(pool, owner, ttl))
            .await
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        self.observe("renew_claim", self.inner.renew_claim(claim, ttl))
            .await
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        self.observe("release_claim", self.inner.release_claim(claim))
            .await
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        self.observe("release_all", self.inner.release_all(pool, owner))
            .await
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        self.observe("reap_dead", self.inner.reap_dead(pool)).await
    }
}

#[async_trait]
impl<B: Lock + ?Sized> Lock for Metered<B> {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let acquired = self.observe("acquire", self.inner.acquire(request)).await?;
        self.metrics
            .lock_acquired(matches!(acquired, Acquire::Granted(_)));
        Ok(acquired)
    }

    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease> {
        self.observe("renew_lock", self.inner.renew_lock(lease, ttl))
            .await
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        self.observe("release_lock", self.inner.release_lock(lease))
            .await
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        self.observe("holders", self.inner.holders()).await
    }
}

#[async_trait]
impl<B: Queue + ?Sized> Queue for Metered<B> {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let id = self.observe("enqueue", self.inner.enqueue(job)).await?;
        self.metrics.enqueued(job.queue(), 1);
        Ok(id)
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let ids = self
            .observe("enqueue_batch", self.inner.enqueue_batch(jobs))
            .await?;
        for job in jobs {
            self.metrics.enqueued(job.queue(), 1);
        }
        Ok(ids)
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        self.metrics.seen(queues);
        self.observe("reserve", self.inner.reserve(queues, owner, lease_ttl, max))
            .await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        self.observe("touch", self.inner.touch(lease, ttl)).await
    }

    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job> {
        let job = self
            .observe("complete", self.inner.complete(lease, result))
            .await?;
        self.metrics.finished(&job);
        Ok(job)
    }

    async fn complete_and_reserve(
        &self,
        lease: &JobLease,
        result: Value,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<(Result<Job>, Vec<Reserved>)> {
        self.metrics.seen(queues);
        let (completed, reserved) = self
            .observe(
                "complete_and_reserve",
                self.inner
                    .complete_and_reserve(lease, result, queues, owner, lease_ttl, max),
            )
            .await?;
        if let Ok(job) = &completed {
            self.metrics.finished(job);
        }
        Ok((completed, reserved))
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let job = self
            .observe("fail", self.inner.fail(lease, error, retry))
            .await?;
        self.metrics.finished(&job);
        Ok(job)
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let job = self.observe("cancel", self.inner.cancel(id)).await?;
        self.metrics.finished(&job);
        Ok(job)
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        self.observe("retry", self.inner.retry(id)).await
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        self.observe("pause", self.inner.pause(queue)).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        self.observe("resume", self.inner.resume(queue)).await
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        self.observe("paused", self.inner.paused()).await
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        self.observe("queues", self.inner.queues(after, limit))
            .await
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        self.observe("list", self.inner.list(filter)).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.observe("get", self.inner.get(id)).await
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        self.observe("last", self.inner.last(queue)).await
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        self.observe("counts", self.inner.counts(queue)).await
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        self.observe("requeue_expired", self.inner.requeue_expired())
            .await
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        self.observe("purge_finished", self.inner.purge_finished(older_than))
            .await
    }
}

#[async_trait]
impl<B: Dispatch + ?Sized> Dispatch for Metered<B> {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.observe("wake", self.inner.wake(queue)).await
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        self.observe("wakeups", self.inner.wakeups(queues)).await
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.observe("publish", self.inner.publish(event)).await
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        self.observe("subscribe", self.inner.subscribe(id)).await
    }
}
