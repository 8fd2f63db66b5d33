//! Logging: tracing to standard error, filtered by `RUST_LOG`, as readable lines or JSON.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global tracing subscriber: `RUST_LOG` if set, else `default_level` (`info` for
/// `serve`, `warn` for the commands whose output is meant for people or scripts), written in
/// `format`.
pub fn init(default_level: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colors for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    // A second install (as in tests that call this twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}
