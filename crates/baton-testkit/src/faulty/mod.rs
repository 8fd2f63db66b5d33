//! [`Faulty`]: a wrapper that makes any backend fail, stall or drop replies on command.
//!
//! ```no_run
//! use baton_memory::MemoryBackend;
//! use baton_testkit::faulty::{Faulty, Mode, Op};
//!
//! let backend = Faulty::new(MemoryBackend::new());
//! let control = backend.control();
//! control.only([Op::Complete]);
//! control.set_mode(Mode::DropReply); // completions take effect, but the caller sees an error
//! ```

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, Beat, Claim, ClaimLease, Dispatch, Error, EventStream, Heartbeat, ItemId, ItemStatus,
    Job, JobEvent, JobFilter, JobId, JobLease, JobPage, Lock, LockHolder, LockLease, LockRequest,
    NewJob, Owner, PoolName, Queue, QueueCounts, QueueName, Reserved, Result, Retry, WakeStream,
};
use serde_json::Value;

mod control;

pub use control::{FaultControl, Mode, Op};

use control::Decision;

/// Any backend, with failures injected on command through a [`FaultControl`].
///
/// Clones share the inner backend (if its clones do) and the control.
#[derive(Debug, Clone)]
pub struct Faulty<B> {
    inner: B,
    control: FaultControl,
}

impl<B> Faulty<B> {
    /// Wraps `inner`, passing every call through until told otherwise.
    pub fn new(inner: B) -> Self {
        Self::with_control(inner, FaultControl::new())
    }

    /// Wraps `inner` under an existing control, so that several wrappers fail together.
    pub fn with_control(inner: B, control: FaultControl) -> Self {
        Self { inner, control }
    }

    /// A handle that changes how calls behave, for this wrapper and its clones.
    pub fn control(&self) -> FaultControl {
        self.control.clone()
    }

    /// The wrapped backend, to inspect it behind the faults.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn call<T>(&self, op: Op, call: impl Future<Output = Result<T>> + Send) -> Result<T> {
        match self.control.enter(op).await {
            Decision::Proceed => call.await,
            Decision::Fail => Err(injected(op, "failed")),
            Decision::DropReply => {
                // The outcome is discarded: the caller cannot know whether it took effect.
                let _outcome = call.await;
                Err(injected(op, "reply dropped"))
            }
        }
    }
}

fn injected(op: Op, what: &str) -> Error {
    Error::Backend {
        message: format!("injected fault: {op} {what}"),
        transient: true,
        source: None,
    }
}

#[async_trait]
impl<B: Heartbeat> Heartbeat for Faulty<B> {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        self.call(Op::Beat, self.inner.beat(owner, ttl)).await
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        self.call(Op::Alive, self.inner.alive(owner)).await
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        self.call(Op::DeadOwners, self.inner.dead_owners()).await
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        self.call(Op::LastBeat, self.inner.last_beat(owner)).await
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        self.call(Op::Forget, self.inner.forget(owner)).await
    }
}

#[async_trait]
impl<B: Claim> Claim for Faulty<B> {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        self.call(Op::Add, self.inner.add(pool, items)).await
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        self.call(Op::Remove, self.inner.remove(pool, items)).await
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        self.call(Op::Items, self.inner.items(pool)).await
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        self.call(Op::Claim, self.inner.claim(pool, owner, ttl))
            .await
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        self.call(Op::RenewClaim, Claim::renew_claim(&self.inner, claim, ttl))
            .await
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        self.call(Op::ReleaseClaim, Claim::release_claim(&self.inner, claim))
            .await
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        self.call(Op::ReleaseAll, self.inner.release_all(pool, owner))
            .await
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        self.call(Op::ReapDead, self.inner.reap_dead(pool)).await
    }
}

#[async_trait]
impl<B: Lock> Lock for Faulty<B> {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        self.call(Op::Acquire, self.inner.acquire(request)).await
    }

    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease> {
        self.call(Op::RenewLock, Lock::renew_lock(&self.inner, lease, ttl))
            .await
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        self.call(Op::ReleaseLock, Lock::release_lock(&self.inner, lease))
            .await
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        self.call(Op::Holders, self.inner.holders()).await
    }
}

#[async_trait]
impl<B: Queue> Queue for Faulty<B> {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        self.call(Op::Enqueue, self.inner.enqueue(job)).await
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        self.call(Op::EnqueueBatch, self.inner.enqueue_batch(jobs))
            .await
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        self.call(
            Op::Reserve,
            self.inner.reserve(queues, owner, lease_ttl, max),
        )
        .await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        self.call(Op::Touch, self.inner.touch(lease, ttl)).await
    }

    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job> {
        self.call(Op::Complete, self.inner.complete(lease, result))
            .await
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        self.call(Op::Fail, self.inner.fail(lease, error, retry))
            .await
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        self.call(Op::Cancel, self.inner.cancel(id)).await
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        self.call(Op::Retry, self.inner.retry(id)).await
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        self.call(Op::Pause, self.inner.pause(queue)).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        self.call(Op::Resume, self.inner.resume(queue)).await
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        self.call(Op::Paused, self.inner.paused()).await
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        self.call(Op::Queues, self.inner.queues(after, limit)).await
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        self.call(Op::List, self.inner.list(filter)).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.call(Op::Get, self.inner.get(id)).await
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        self.call(Op::Last, self.inner.last(queue)).await
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        self.call(Op::Counts, self.inner.counts(queue)).await
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        self.call(Op::RequeueExpired, self.inner.requeue_expired())
            .await
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        self.call(Op::PurgeFinished, self.inner.purge_finished(older_than))
            .await
    }
}

#[async_trait]
impl<B: Dispatch> Dispatch for Faulty<B> {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.call(Op::Wake, self.inner.wake(queue)).await
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        self.call(Op::Wakeups, self.inner.wakeups(queues)).await
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.call(Op::Publish, self.inner.publish(event)).await
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        self.call(Op::Subscribe, self.inner.subscribe(id)).await
    }
}
