//! `baton bench --only rebalance-join --only rebalance-crash`: the sync pool's rebalance
//! figures, for 1,000 accounts and four managers.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

#[tokio::test]
async fn bench_measures_rebalance_after_a_join_and_after_a_crash() {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "bench",
                "--backend",
                "memory://",
                "--only",
                "rebalance-join",
                "--only",
                "rebalance-crash",
            ])
            .env_clear()
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench finishes within 300s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let modes: Vec<(&str, &str)> = figures
        .iter()
        .map(|f| (f["bench"].as_str().unwrap(), f["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(modes, [("rebalance", "join"), ("rebalance", "crash")]);
    for figure in &figures {
        assert_eq!(figure["ops"], 1000, "{figure}");
        assert_eq!(figure["tasks"], 4, "{figure}");
        assert!(figure["seconds"].as_f64().unwrap() > 0.0, "{figure}");
    }
    // A crash is noticed only once the heartbeat (2 s) has expired.
    assert!(
        figures[1]["seconds"].as_f64().unwrap() >= 1.5,
        "{}",
        figures[1]
    );
}
