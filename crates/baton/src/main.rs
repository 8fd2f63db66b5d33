//! The `baton` command: parses the command line and hands over to [`baton::commands`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = baton::cli::Cli::parse();
    // `serve` logs as its configuration says, once it has read it.
    if !matches!(cli.command, baton::cli::Command::Serve(_)) {
        baton::telemetry::init("warn", baton::config::LogFormat::Pretty);
    }
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
