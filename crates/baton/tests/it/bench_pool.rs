//! `baton bench --only workpool`: jobs per second through a work pool limited to 32 at once.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

#[tokio::test]
async fn bench_runs_every_job_through_a_work_pool_of_thirty_two() {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "bench",
                "--backend",
                "memory://",
                "--only",
                "workpool",
                "--jobs",
                "500",
            ])
            .env_clear()
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench finishes within 300s")
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(figures.len(), 1, "{stdout}");
    let figure = &figures[0];
    assert_eq!(figure["bench"], "workpool");
    assert_eq!(figure["jobs"], 500);
    assert_eq!(figure["workers"], 32);
    assert!(
        figure["jobs_per_second"].as_f64().unwrap() > 0.0,
        "{figure}"
    );
}
