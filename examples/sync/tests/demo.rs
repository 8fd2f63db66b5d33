//! Runs the demo briefly so that it keeps working: two processes, six accounts, six seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_syncs_mail_moves_accounts_and_returns_every_claim() {
    let dir = std::env::temp_dir().join(format!("baton-sync-demo-test-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_example-sync"))
        .args([
            "--processes",
            "2",
            "--accounts",
            "6",
            "--seconds",
            "6",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("start syncing"), "{stdout}");
    assert!(stdout.contains(": synced \""), "{stdout}");
    assert!(stdout.contains("stopped: shutdown"), "{stdout}");
    assert!(stdout.contains("every claim returned"), "{stdout}");
    assert!(
        stdout.contains("demo: done: 7 accounts, 7 unclaimed"),
        "{stdout}"
    );
}
