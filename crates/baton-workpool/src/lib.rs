//! Baton's durable work pool: async jobs (a registered handler and a JSON argument) that run at
//! most `max_parallelism` at once across every process running the pool, with retries and
//! backoff, cancellation, recovery after a member dies, and a completion callback per job.
//!
//! Built on the [`Queue`](baton_core::Queue), [`Lock`](baton_core::Lock) and
//! [`Dispatch`](baton_core::Dispatch) traits (and [`Claim`](baton_core::Claim)'s idempotent
//! `add` as a durable "done" flag), so it runs unchanged on every backend.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use baton_workpool::{EnqueueOptions, JobStatus, Outcome, PoolConfig, RetryBehavior, WorkPool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> baton_core::Result<()> {
//! let backend = Arc::new(baton_memory::MemoryBackend::new());
//! let pool = WorkPool::new(backend, PoolConfig::new("thumbnails")?)?;
//! pool.register("double", |_ctx, args| async move {
//!     Ok(serde_json::json!(args.as_i64().unwrap_or(0) * 2))
//! });
//! let member = pool.start();
//! let options = EnqueueOptions::new().with_retry(RetryBehavior::new(3, Duration::from_millis(10), 2.0));
//! let id = pool.enqueue("double", serde_json::json!(21), options).await?;
//! while !pool.status(id).await?.is_finished() {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//! }
//! let JobStatus::Finished { outcome, .. } = pool.status(id).await? else { unreachable!() };
//! assert_eq!(outcome, Outcome::Succeeded { result: serde_json::json!(42) });
//! member.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! There is no scheduler. Jobs live in one queue, `workpool:<name>`; every member runs one
//! worker per parallelism slot below the current limit, and worker `i` runs a job only while
//! it holds the lock `workpool:<name>:slot:<i>`, taken with a lease of `lease_ttl` and renewed
//! every third of it, and the job's own reservation, also a lease.
//!
//! **At most `max_parallelism` handlers run at once, cluster-wide.** A handler is polled only
//! inside a guard that checks this host's monotonic clock before every poll and stops polling
//! (drops the handler) once the earlier of its two leases may have expired: the guard's
//! deadline is the time the grant or renewal request was *sent*, plus the TTL, minus a margin
//! of a tenth of it. The backend starts a lease no earlier than it receives the request and
//! judges expiry on its own clock, so, as long as the two clocks run at rates within that
//! margin of each other, a handler stops before the backend can hand its slot to anyone else.
//! The lock trait grants each slot to one holder at a time, so at every instant at most one
//! handler runs per slot, and there are `max_parallelism` slots. This holds while members join
//! (a newcomer must take a free slot), crash (a dead process runs nothing, and its slots free
//! up when their leases expire), are paused (a member resumed after `SIGSTOP` finds its
//! deadline passed and drops the handler before polling it again) or are cut off from the
//! backend (renewals fail, the deadline passes). Work a handler hands to other threads or
//! processes is outside the guard: it must watch the job's [`CancelSignal`] or fencing token.
//! Raising the limit starts more workers at once; lowering it stops workers above the limit
//! once their current job ends, so for that long the old limit still bounds the count.
//!
//! **Two members never start the same work.** A job starts only under its reservation, whose
//! fencing token the backend checks on every renewal and on the final `complete` or `fail`:
//! a member that lost its lease can neither record an outcome nor keep running (its guard
//! fires). The seed system keeps a single scheduling loop with a generation counter; here
//! nothing needs one, since every start is decided by two fenced leases and every housekeeping
//! step ([`requeue_expired`](baton_core::Queue::requeue_expired)) is exactly-once by the queue's
//! contract however many members run it.
//!
//! **Recovery** is by lease expiry: a job whose member died is handed back after `lease_ttl`
//! (seconds, not the seed's five minutes) and retried or failed by its retry behaviour.
//!
//! **Completion callbacks run once per job.** Before anything ends a job that has a callback
//! (the member ending it, a canceller), it stores a completion record naming the job in the
//! queue `workpool:<name>:completions`; only then is the job ended. Such a job has unlimited
//! attempts at the queue level, so the queue itself never ends it (the pool counts attempts
//! and ends it, recording first). Any member runs the records: a record whose job has not yet
//! ended waits; otherwise it takes the job's completion lock, skips if the job's `done` item
//! exists, calls the callback under the lock's guard, adds `done`, and completes the record. A
//! crash between storing a record and ending the job leaves an extra record, which finds
//! `done` and is skipped; a crash during the callback leaves it unrecorded, so it is called
//! again — like any job, a callback is repeated only when the member running it died or lost
//! its lease, and it gets the job id and a fencing token to tell.
//!
//! **Cancellation** records the callback, then cancels the job in the queue: a pending job
//! never starts, a job waiting for a retry is never retried, and a running job's lease is
//! revoked, so its worker (told by a job event or its next renewal) sets the handler's
//! [`CancelSignal`] and drops the handler after `cancel_grace` if it has not returned.
//! [`WorkPool::cancel_all`] stores the id of the newest job; running jobs up to it are
//! canceled within a renewal, pending ones when they come due.
//!
//! # Logs and metrics
//!
//! The seed's levels map onto `tracing` as: its per-job `info` events (started, completed,
//! retrying) at `debug`, its report at `info` (target `baton_workpool::report`, fields
//! `completed`, `succeeded`, `failed`, `retries`, `canceled`, `running`, per member and per
//! `report_interval`), its warnings at `warn` and its errors at `error`. [`WorkPool::stats`]
//! returns the same counters since start, for a metrics endpoint.

mod completion;
mod config;
mod guard;
mod handler;
mod member;
mod names;
mod pool;
mod stats;
mod worker;

pub use config::{
    DEFAULT_MAX_PARALLELISM, EnqueueOptions, MAX_PARALLELISM, MAX_POOL_NAME_LEN, OnComplete,
    PoolConfig, RetryBehavior, StartAt,
};
pub use handler::{CancelSignal, Completion, HandlerError, JobContext, Outcome};
pub use member::Member;
pub use pool::{JobStatus, WorkPool};
pub use stats::PoolStats;
