//! Baton's account-sync manager: a pool of processes shares a set of accounts through any
//! backend's [`Claim`](baton_core::Claim) and [`Heartbeat`](baton_core::Heartbeat), each
//! process running one long-lived worker per account it holds.
//!
//! Start a [`SyncManager`] in every process with the same [`SyncConfig::pool`], an
//! [`AccountSource`] that lists the accounts, and a [`WorkerFactory`]. The managers keep every
//! account claimed by exactly one live process, balance the accounts among themselves, take
//! over the accounts of a process whose heartbeat stops, and return everything on shutdown.
//! Each worker gets its claim's fencing token and a cancellation signal
//! ([`WorkerContext`]); [`pool_status`] and [`SyncHandle::metrics`] tell an autoscaler or an
//! operator how the pool stands.

mod balance;
mod config;
mod engine;
mod heartbeat;
mod manager;
mod source;
mod status;
mod worker;

pub use balance::{excess, fair_share};
pub use config::{MEMBERS_SUFFIX, SyncConfig, members_pool};
pub use manager::{SyncHandle, SyncManager, shutdown_signal};
pub use source::{AccountSource, SourceError, StaticAccounts};
pub use status::{IdentityStatus, PoolStatus, RunningAccount, SyncMetrics, pool_status};
pub use worker::{StopReason, WorkerContext, WorkerFactory, WorkerFuture};
