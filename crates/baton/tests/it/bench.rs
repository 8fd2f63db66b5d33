//! `baton bench` with tiny numbers: every figure is printed as JSON with its fields, and the
//! end-to-end figure completed every job.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

#[tokio::test]
async fn bench_prints_one_json_line_per_figure_and_completes_every_job() {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "bench",
                "--backend",
                "memory://",
                "--jobs",
                "205",
                "--workers",
                "4",
                "--batch",
                "50",
                "--lock-ops",
                "200",
                "--prefetch",
                "3",
            ])
            .env_clear()
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench finishes within 120s")
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
    let names: Vec<(&str, Option<&str>)> = figures
        .iter()
        .map(|f| (f["bench"].as_str().unwrap(), f["mode"].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("enqueue", Some("single")),
            ("enqueue", Some("batch")),
            ("end_to_end", None),
            ("lock", None),
        ]
    );
    for figure in &figures {
        assert_eq!(figure["backend"], "memory://", "{figure}");
        assert!(figure["seconds"].as_f64().unwrap() >= 0.0, "{figure}");
    }
    let [single, batch, end_to_end, lock] = &figures[..] else {
        unreachable!()
    };
    assert_eq!(single["jobs"], 205);
    assert!(single["per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(batch["jobs"], 205);
    assert_eq!(batch["batch"], 50);
    assert!(batch["per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(end_to_end["jobs"], 205);
    assert_eq!(end_to_end["prefetch"], 3);
    assert_eq!(end_to_end["workers"], 4);
    assert_eq!(end_to_end["completed"], 205, "every job was completed");
    assert!(end_to_end["jobs_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(lock["ops"], 200);
    let p50 = lock["p50_us"].as_f64().unwrap();
    let p99 = lock["p99_us"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99, "{lock}");
    assert!(lock["per_second"].as_f64().unwrap() > 0.0);
}

/// Runs a tiny bench against `url` and returns its figures, asserting it succeeded.
async fn tiny_bench(url: &str) -> Vec<Value> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "bench",
                "--backend",
                url,
                "--jobs",
                "60",
                "--workers",
                "4",
                "--batch",
                "20",
                "--lock-ops",
                "40",
            ])
            .env_clear()
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench finishes within 120s")
    .unwrap();
    assert!(
        output.status.success(),
        "bench on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn completed_every_job(figures: &[Value]) -> bool {
    figures
        .iter()
        .any(|f| f["bench"] == "end_to_end" && f["completed"] == 60)
}

#[tokio::test]
async fn bench_runs_on_a_sqlite_file() {
    let dir = crate::support::temp_dir("bench-sqlite");
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let figures = tiny_bench(&url).await;
    assert_eq!(figures.len(), 4, "{figures:?}");
    assert!(completed_every_job(&figures), "{figures:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn bench_runs_on_mysql() {
    let url = std::env::var("BATON_TEST_MYSQL_URL").expect(
        "BATON_TEST_MYSQL_URL is not set: run the tests through scripts/test, which starts the servers",
    );
    let figures = tiny_bench(&url).await;
    assert_eq!(figures.len(), 4, "{figures:?}");
    assert!(completed_every_job(&figures), "{figures:?}");
    assert!(
        figures
            .iter()
            .all(|f| !f["backend"].as_str().unwrap_or("").contains(":baton@")),
        "the password is hidden: {figures:?}"
    );
}

#[tokio::test]
async fn bench_runs_on_postgres() {
    let url = std::env::var("BATON_TEST_POSTGRES_URL").expect(
        "BATON_TEST_POSTGRES_URL is not set: run the tests through scripts/test, which starts the servers",
    );
    let figures = tiny_bench(&url).await;
    assert_eq!(figures.len(), 4, "{figures:?}");
    assert!(completed_every_job(&figures), "{figures:?}");
}

/// Runs `baton bench` with `args` and returns its figures, asserting it succeeded.
async fn bench(args: &[&str]) -> Vec<Value> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .arg("bench")
            .args(args)
            .env_clear()
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bench finishes within 120s")
    .unwrap();
    assert!(
        output.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_backlog_keeps_the_queue_as_deep_and_is_topped_up_not_refilled_on_the_next_run() {
    let dir = crate::support::temp_dir("bench-backlog");
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let args = [
        "--backend",
        &url,
        "--only",
        "end-to-end",
        "--queue",
        "deep",
        "--jobs",
        "20",
        "--workers",
        "3",
        "--backlog-pending",
        "50",
        "--backlog-finished",
        "30",
    ];
    let first = bench(&args).await;
    let [figure] = &first[..] else {
        panic!("--only end-to-end measures one figure: {first:?}")
    };
    assert_eq!(figure["bench"], "end_to_end");
    assert_eq!(figure["completed"], 20, "{figure}");
    assert_eq!(figure["backlog_pending"], 50, "{figure}");
    assert_eq!(figure["backlog_finished"], 30, "{figure}");

    let second = bench(&args).await;
    let [figure] = &second[..] else {
        panic!("--only end-to-end measures one figure: {second:?}")
    };
    assert_eq!(figure["completed"], 20, "{figure}");
    assert_eq!(
        figure["backlog_pending"], 50,
        "the queue stayed as deep: {figure}"
    );
    assert_eq!(
        figure["backlog_finished"], 50,
        "the first run's jobs joined the finished ones, none were added: {figure}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn only_measures_the_figures_asked_for_in_their_usual_order() {
    let figures = bench(&[
        "--backend",
        "memory://",
        "--only",
        "lock",
        "--only",
        "enqueue-single",
        "--jobs",
        "10",
        "--lock-ops",
        "10",
    ])
    .await;
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f["bench"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["enqueue", "lock"], "{figures:?}");
}
