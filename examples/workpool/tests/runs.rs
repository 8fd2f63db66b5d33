//! The example runs to the end: every sample file hashed, the missing ones failed without
//! retries, the flaky ones retried, and never more fetches at once than the limit.

use std::process::Command;

#[test]
fn the_example_hashes_the_samples_within_the_limit() {
    let output = Command::new(env!("CARGO_BIN_EXE_example-workpool"))
        .args(["--parallel", "3"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("12 hashed, 2 failed, 2 retried; at most "),
        "{stdout}"
    );
    assert!(summary.ends_with("(limit 3)"), "{stdout}");
    assert_eq!(stdout.matches("FAILED").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("(2 attempts)").count(), 2, "{stdout}");
}
