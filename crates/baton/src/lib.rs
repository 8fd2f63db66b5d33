//! The all-in-one Baton binary as a library: configuration, command line, HTTP API and client,
//! and the benchmark. `main.rs` only parses the command line and calls [`commands::run`].
//!
//! Only this crate knows figment, clap, axum and reqwest; everything it drives is reached through
//! the `baton-core` traits on an `Arc<dyn Backend>` chosen by URL in [`backend::connect`].

pub mod api;
pub mod backend;
pub mod bench;
pub mod bench_master;
pub mod bench_pool;
pub mod broker;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod insight;
pub mod master;
pub mod monitoring;
pub mod output;
pub mod serve;
pub mod tasks;
pub mod telemetry;
pub mod upkeep;
pub mod wire;
