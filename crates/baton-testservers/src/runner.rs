//! A test runner for test binaries that are their own child processes (`harness = false`):
//! cargo's name filter, one line per test, and libtest's summary line, which `scripts/test`
//! totals.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

/// Runs named tests one after another, each caught if it panics, and sums them up.
#[derive(Debug)]
pub struct Runner {
    filter: Vec<String>,
    ran: usize,
    failed: Vec<String>,
}

impl Runner {
    /// A runner that runs the tests whose names contain one of the command line's arguments
    /// that are not flags (every test if there are none), as libtest does.
    pub fn from_args() -> Self {
        Self {
            filter: std::env::args()
                .skip(1)
                .filter(|arg| !arg.starts_with('-'))
                .collect(),
            ran: 0,
            failed: Vec::new(),
        }
    }

    /// Whether the filter selects the test `name`.
    pub fn selects(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|part| name.contains(part.as_str()))
    }

    /// Runs `test` as the test `name` if the filter selects it; a panic fails it.
    pub fn run(&mut self, name: &str, test: impl FnOnce()) {
        if !self.selects(name) {
            return;
        }
        self.ran += 1;
        println!("test {name} ...");
        match catch_unwind(AssertUnwindSafe(test)) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                self.failed.push(name.to_owned());
            }
        }
    }

    /// Prints libtest's summary line and the failed tests; failure if any test failed.
    pub fn finish(self) -> ExitCode {
        println!(
            "\ntest result: {}. {} passed; {} failed",
            if self.failed.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            self.ran - self.failed.len(),
            self.failed.len()
        );
        if self.failed.is_empty() {
            return ExitCode::SUCCESS;
        }
        for name in &self.failed {
            println!("    {name}");
        }
        ExitCode::FAILURE
    }
}
