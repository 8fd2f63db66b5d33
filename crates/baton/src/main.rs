//! The `baton` command: parses the command line and hands over to [`baton::commands`].

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the async runtime allocates and frees small buffers from two threads at once,
/// which the system allocator serves more slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = baton::cli::Cli::parse();
    // Installed before the async runtime starts and dropped after it ends: the span exporter
    // blocks while it sends.
    let _telemetry = baton::telemetry::start(&cli);
    match baton::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(exit) = err.downcast_ref::<baton::tasks::ExitWith>() {
                return ExitCode::from(exit.0);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
