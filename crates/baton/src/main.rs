//! The `baton` command: parses the command line and hands over to [`baton::commands`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = baton::cli::Cli::parse();
    baton::telemetry::init(&cli.command);
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
