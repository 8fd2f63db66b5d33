//! [`Detached`]: a backend whose every call runs to its end, whatever becomes of its caller.
//!
//! A future dropped mid-call (a timeout, a `select!`, a stopping task) stops wherever it was.
//! Some drivers cannot resume a connection cut off there: the MySQL driver may wait forever for
//! an answer that will never come, and the pool never gets that connection back. Under
//! [`Detached`], each call runs in a task of its own; a caller that goes away only stops
//! waiting for the answer, which is the same uncertainty as a lost reply.

use std::future::Future;
use std::ops::Deref;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, Beat, Claim, ClaimLease, Dispatch, Error, EventStream, Heartbeat, ItemId, ItemStatus,
    Job, JobEvent, JobFilter, JobId, JobLease, JobPage, Lock, LockHolder, LockLease, LockRequest,
    NewJob, Owner, PoolName, Queue, QueueCounts, QueueName, Reserved, Result, Retry, WakeStream,
};
use serde_json::Value;

/// A backend that opens itself from a configuration, so that [`Detached::connect`] can open it.
pub trait Connect: Sized {
    /// What the backend is opened with.
    type Config;

    /// Opens the backend.
    fn connect(config: Self::Config) -> impl Future<Output = Result<Self>>;
}

/// `B` with each call run in a task of its own, so that dropping a call's future never cuts
/// the call short. Clones share `B`'s clones; `B`'s own methods are reached through `Deref`.
#[derive(Clone, Debug)]
pub struct Detached<B> {
    inner: B,
}

impl<B> Detached<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner }
    }

    /// The wrapped backend, whose calls are not detached.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Connect> Detached<B> {
    /// Opens `B` with `config` and wraps it.
    ///
    /// # Errors
    ///
    /// Whatever opening `B` returns.
    pub async fn connect(config: B::Config) -> Result<Self> {
        B::connect(config).await.map(Self::new)
    }
}

impl<B> Deref for Detached<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.inner
    }
}

/// Runs `call` in a task of its own and waits for its answer.
async fn run<T: Send + 'static>(
    call: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match tokio::spawn(call).await {
        Ok(answer) => answer,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(Error::transient(error)),
    }
}

#[async_trait]
impl<B: Heartbeat + Clone + 'static> Heartbeat for Detached<B> {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        let (inner, owner) = (self.inner.clone(), owner.clone());
        run(async move { inner.beat(&owner, ttl).await }).await
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        let (inner, owner) = (self.inner.clone(), owner.clone());
        run(async move { inner.alive(&owner).await }).await
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let inner = self.inner.clone();
        run(async move { inner.dead_owners().await }).await
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let (inner, owner) = (self.inner.clone(), owner.clone());
        run(async move { inner.last_beat(&owner).await }).await
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        let (inner, owner) = (self.inner.clone(), owner.clone());
        run(async move { inner.forget(&owner).await }).await
    }
}

#[async_trait]
impl<B: Claim + Clone + 'static> Claim for Detached<B> {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        let (inner, pool, items) = (self.inner.clone(), pool.clone(), items.to_vec());
        run(async move { inner.add(&pool, &items).await }).await
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        let (inner, pool, items) = (self.inner.clone(), pool.clone(), items.to_vec());
        run(async move { inner.remove(&pool, &items).await }).await
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        let (inner, pool) = (self.inner.clone(), pool.clone());
        run(async move { inner.items(&pool).await }).await
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        let (inner, pool, owner) = (self.inner.clone(), pool.clone(), owner.clone());
        run(async move { inner.claim(&pool, &owner, ttl).await }).await
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        let (inner, claim) = (self.inner.clone(), claim.clone());
        run(async move { inner.renew_claim(&claim, ttl).await }).await
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        let (inner, claim) = (self.inner.clone(), claim.clone());
        run(async move { inner.release_claim(&claim).await }).await
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        let (inner, pool, owner) = (self.inner.clone(), pool.clone(), owner.clone());
        run(async move { inner.release_all(&pool, &owner).await }).await
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        let (inner, pool) = (self.inner.clone(), pool.clone());
        run(async move { inner.reap_dead(&pool).await }).await
    }
}

#[async_trait]
impl<B: Lock + Clone + 'static> Lock for Detached<B> {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let (inner, request) = (self.inner.clone(), request.clone());
        run(async move { inner.acquire(&request).await }).await
    }

    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease> {
        let (inner, lease) = (self.inner.clone(), lease.clone());
        run(async move { inner.renew_lock(&lease, ttl).await }).await
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        let (inner, lease) = (self.inner.clone(), lease.clone());
        run(async move { inner.release_lock(&lease).await }).await
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        let inner = self.inner.clone();
        run(async move { inner.holders().await }).await
    }
}

#[async_trait]
impl<B: Queue + Clone + 'static> Queue for Detached<B> {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let (inner, job) = (self.inner.clone(), job.clone());
        run(async move { inner.enqueue(&job).await }).await
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let (inner, jobs) = (self.inner.clone(), jobs.to_vec());
        run(async move { inner.enqueue_batch(&jobs).await }).await
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        let (inner, queues, owner) = (self.inner.clone(), queues.to_vec(), owner.clone());
        run(async move { inner.reserve(&queues, &owner, lease_ttl, max).await }).await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        let (inner, lease) = (self.inner.clone(), lease.clone());
        run(async move { inner.touch(&lease, ttl).await }).await
    }

    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job> {
        let (inner, lease) = (self.inner.clone(), lease.clone());
        run(async move { inner.complete(&lease, result).await }).await
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
        let (inner, lease, queues, owner) = (
            self.inner.clone(),
            lease.clone(),
            queues.to_vec(),
            owner.clone(),
        );
        run(async move {
            inner
                .complete_and_reserve(&lease, result, &queues, &owner, lease_ttl, max)
                .await
        })
        .await
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let (inner, lease, error) = (self.inner.clone(), lease.clone(), error.to_owned());
        run(async move { inner.fail(&lease, &error, retry).await }).await
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let inner = self.inner.clone();
        run(async move { inner.cancel(id).await }).await
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        let inner = self.inner.clone();
        run(async move { inner.retry(id).await }).await
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        let (inner, queue) = (self.inner.clone(), queue.clone());
        run(async move { inner.pause(&queue).await }).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        let (inner, queue) = (self.inner.clone(), queue.clone());
        run(async move { inner.resume(&queue).await }).await
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        let inner = self.inner.clone();
        run(async move { inner.paused().await }).await
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        let (inner, after) = (self.inner.clone(), after.cloned());
        run(async move { inner.queues(after.as_ref(), limit).await }).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        let (inner, filter) = (self.inner.clone(), filter.clone());
        run(async move { inner.list(&filter).await }).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let inner = self.inner.clone();
        run(async move { inner.get(id).await }).await
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        let (inner, queue) = (self.inner.clone(), queue.clone());
        run(async move { inner.last(&queue).await }).await
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let (inner, queue) = (self.inner.clone(), queue.clone());
        run(async move { inner.counts(&queue).await }).await
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        let inner = self.inner.clone();
        run(async move { inner.requeue_expired().await }).await
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        let inner = self.inner.clone();
        run(async move { inner.purge_finished(older_than).await }).await
    }
}

#[async_trait]
impl<B: Dispatch + Clone + 'static> Dispatch for Detached<B> {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        let (inner, queue) = (self.inner.clone(), queue.clone());
        run(async move { inner.wake(&queue).await }).await
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        let (inner, queues) = (self.inner.clone(), queues.to_vec());
        run(async move { inner.wakeups(&queues).await }).await
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        let (inner, event) = (self.inner.clone(), event.clone());
        run(async move { inner.publish(&event).await }).await
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        let inner = self.inner.clone();
        run(async move { inner.subscribe(id).await }).await
    }
}
