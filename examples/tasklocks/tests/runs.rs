//! The example runs to the end: the backups, the migration and the export take turns on the
//! apps' locks, the hourly backup is refused, and the example's own checks hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

/// How long the example may take before the test fails; it takes well under a second.
const WITHIN: Duration = Duration::from_secs(60);

/// Runs the example, killing it and failing if it has not ended within [`WITHIN`].
fn run_example() -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_example-tasklocks"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the example");
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(WITHIN) {
        Ok(output) => output.expect("wait for the example"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the example did not end within {WITHIN:?}");
        }
    }
}

/// The position of the first line of `stdout` that starts with `start`, failing if none does.
fn line_starting(stdout: &str, start: &str) -> usize {
    stdout
        .lines()
        .position(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?}:\n{stdout}"))
}

#[test]
fn the_tasks_take_turns_on_the_locks_and_the_checks_hold() {
    let output = run_example();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().last().unwrap_or_default(),
        "done: 5 tasks: 3 succeeded, 1 failed, 1 refused; app:1 had 3 holders in turn (tokens \
         1, 2, 3), app:2 had 2 (tokens 1, 2); no lock ever had two holders at once; the \
         migration held both apps or neither at each of 5 looks",
        "{stdout}"
    );

    // The migration waits for both backups and starts holding both apps' locks after they end.
    let migration_waits = line_starting(
        &stdout,
        "wait     task 2 on ops-1 (migration of apps 1 and 2): waiting for task 1 (nightly \
         backup of app 1) and task 101 (nightly backup of app 2) to finish",
    );
    let backup_1_ends = line_starting(
        &stdout,
        "finish   task 1 on ops-1 (nightly backup of app 1): succeeded",
    );
    let backup_2_fails = line_starting(
        &stdout,
        "finish   task 101 on ops-2 (nightly backup of app 2): failed with exit code 3; its log \
         ends with \"no space left on device\"",
    );
    let migration_starts = line_starting(
        &stdout,
        "start    task 2 on ops-1 (migration of apps 1 and 2): holds app:1, app:2 with token 2",
    );
    assert!(migration_waits < backup_1_ends, "{stdout}");
    assert!(backup_1_ends < migration_starts, "{stdout}");
    assert!(backup_2_fails < migration_starts, "{stdout}");

    // Between the two backups' ends, app 1 is free and the migration holds neither app.
    assert!(
        stdout.contains(
            "  app:1  free; in line: task 2 (migration of apps 1 and 2), task 103 (export of \
             app 1)\n  app:2  held by task 101 (nightly backup of app 2) for ops-2 with token 1"
        ),
        "{stdout}"
    );

    // The hourly backup will not wait and is told whom it would wait for.
    line_starting(
        &stdout,
        "refused  task 102 on ops-2 (hourly backup of app 1): could not have its locks: waiting \
         for task 1 (nightly backup of app 1) to finish, behind task 2 (migration of apps 1 and \
         2) queued earlier",
    );

    // The export, queued after the migration, runs only after it.
    let migration_ends = line_starting(
        &stdout,
        "finish   task 2 on ops-1 (migration of apps 1 and 2): succeeded",
    );
    let export_starts = line_starting(
        &stdout,
        "start    task 103 on ops-2 (export of app 1): holds app:1 with token 3",
    );
    assert!(migration_ends < export_starts, "{stdout}");
}
