//! Logging: tracing to standard error, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::cli::Command;

/// Installs the global tracing subscriber: `RUST_LOG` if set, else `info` for `serve` and
/// `warn` for the commands whose output is meant for people or scripts.
pub fn init(command: &Command) {
    let default = match command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second install (as in tests that call this twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
