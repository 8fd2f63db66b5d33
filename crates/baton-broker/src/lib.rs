//! Baton's job broker over ZeroMQ.
//!
//! The broker pushes jobs to workers that wait for them, so no worker polls a database, and
//! lets clients enqueue, watch and inspect jobs, in any language that speaks ZeroMQ. Jobs live
//! in any [`Queue`](baton_core::Queue) backend, so a broker restart loses nothing. The wire
//! protocol is in `PROTOCOL.md`; it is a superset of the seed broker's, so workers and clients
//! written for that one work unchanged.
//!
//! - [`start`] runs a broker;
//! - [`Worker`] runs jobs from a queue with a handler;
//! - [`Client`] enqueues, waits for, inspects and cancels jobs.

mod broker;
mod client;
mod config;
pub mod protocol;
mod roster;
mod worker;

pub use broker::{BrokerHandle, BrokerStats, Roster, start};
pub use client::{Client, ClientError};
pub use config::BrokerConfig;
pub use roster::{WorkerActivity, WorkerInfo};
pub use worker::{JobContext, Outcome, Worker, WorkerHandle};
