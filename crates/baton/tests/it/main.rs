//! Integration tests of the `baton` binary, one module per area.

// A test that meets an unexpected error should fail on the spot, with the error in the message.
#![allow(clippy::unwrap_used)]

mod api;
mod bench;
mod bench_pool;
mod bench_sync;
mod broker;
mod cli;
mod config;
mod dashboard;
mod master;
mod monitoring;
mod output;
mod support;
mod tasks;
mod trace;
mod upkeep;
