//! The example runs to the end: every text counted but the image, the flaky one after a retry,
//! the image failed without one, each job ended exactly once, and the broker stopped.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the example may take; it normally ends within a second or two.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_example_counts_every_text_retries_the_flaky_one_and_fails_the_image() {
    let output = run(&["--workers", "3"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The example checks its own invariants and exits non-zero if one breaks; the summary says
    // what it saw: seven jobs, eight runs (the flaky text ran twice).
    let summary = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        summary, "6 counted, 1 failed, 1 retried; 8 runs on 3 workers; broker stopped",
        "{stdout}"
    );
    let results: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("job "))
        .collect();
    assert_eq!(results.len(), 7, "one line per job: {stdout}");
    assert!(
        stdout.contains("ozymandias.txt: 32 words, 30 distinct (counter-"),
        "{stdout}"
    );
    let flaky = results
        .iter()
        .find(|line| line.contains("jabberwocky.txt"))
        .expect("a line for the flaky text");
    assert!(
        flaky.contains(": 23 words, 18 distinct (") && flaky.ends_with(", 2 attempts)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cover.jpg: FAILED after 1 attempt: cover.jpg has no text to count"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("FAILED").count(), 1, "{stdout}");
}

/// Runs the example with `args`, killing it if it takes longer than [`LIMIT`].
fn run(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_example-broker"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(LIMIT) {
        Ok(output) => output.expect("run the example"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the example did not finish within {LIMIT:?}");
        }
    }
}
