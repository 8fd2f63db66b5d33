//! Baton's core contract: the [`Heartbeat`], [`Claim`], [`Lock`], [`Queue`] and [`Dispatch`]
//! traits that every backend implements and every subsystem is built from, with their value
//! types, one [`Error`] enum and an injectable [`Clock`].
//!
//! This crate names no backend and reads no configuration.

mod claim;
mod dispatch;
mod error;
mod heartbeat;
mod job;
mod lease;
mod lock;
mod name;
mod queue;
mod retry;
mod time;

pub use claim::{Claim, ClaimLease, ItemStatus, MAX_ITEMS, validate_items};
pub use dispatch::{Dispatch, EventStream, WakeStream};
pub use error::{Error, Result};
pub use heartbeat::{Beat, Heartbeat};
pub use job::{
    Attempt, AttemptOutcome, Job, JobEvent, JobId, JobLease, JobState, MAX_PAYLOAD_BYTES, NewJob,
    Priority, QueueCounts, Reserved, Retry, TraceParent, check_json_size,
};
pub use lease::{FencingToken, Lease, MAX_TTL, MIN_TTL, validate_ttl};
pub use lock::{Acquire, Lock, LockHolder, LockLease, LockRequest, MAX_LOCK_NAMES, MAX_REASON_LEN};
pub use name::{ItemId, LockName, MAX_NAME_LEN, Owner, PoolName, QueueName, validate_name};
pub use queue::{
    JobFilter, JobPage, MAX_BATCH, MAX_ERROR_BYTES, MAX_LIST, MAX_QUEUE_LIST, MAX_RESERVE, Queue,
    truncate_error, validate_batch, validate_list, validate_queue_list, validate_reserve,
};
pub use retry::RetryPolicy;
pub use time::{Clock, ManualClock, SystemClock, Timestamp, duration_millis};

/// Everything a complete backend offers: all five traits on one handle.
///
/// Implemented for every type that implements the five; the binary holds an
/// `Arc<dyn Backend>` chosen from configuration and hands each subsystem the traits it needs.
pub trait Backend: Heartbeat + Claim + Lock + Queue + Dispatch {}

impl<T: Heartbeat + Claim + Lock + Queue + Dispatch> Backend for T {}
