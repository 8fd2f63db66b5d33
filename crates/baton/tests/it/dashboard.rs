//! The dashboard in a real browser: `baton serve` on SQLite with an API token, driven by
//! `tests/dashboard/dashboard.mjs` in headless Chromium (Playwright). It logs in, sees a job
//! enqueued through the API appear, cancels it from its page, disables and enables a master,
//! pauses a queue, lists a held lock and a task waiting for it, reads a task's log, and saves a screenshot of every page under `target/tmp/dashboard/`.
//!
//! Needs Chromium (`/usr/bin/chromium`, Debian's `chromium`) and the script's `node_modules`
//! (`npm ci --prefix crates/baton/tests/dashboard`); `scripts/test` installs both.

use std::path::Path;
use std::time::Duration;

use baton_core::{LockName, LockRequest, Owner};

use crate::cli::{Scratch, lead, run, serve_in, terminate};
use crate::support::{LineWaiter, temp_dir};

const TOKEN: &str = "a-dashboard-token-of-some-length";
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test]
async fn the_dashboard_logs_in_shows_new_jobs_and_steers_jobs_masters_and_queues() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix {}` (scripts/test does)",
        script_dir.display()
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (scripts/test does)"
    );
    let dir = Scratch(temp_dir("dashboard"));
    let url = format!("sqlite://{}", dir.0.join("baton.db").display());

    // A master that leads, for the masters page to disable and enable.
    let backend = baton::backend::connect(&url, "baton_").await.unwrap();
    lead(backend.as_ref(), "nightly-report", "report-host-1").await;
    // A task run on this host under a lock, for the locks page to list with its log.
    let task = run(
        &dir.0,
        &[
            "task",
            "run",
            "--dir",
            "baton-tasks",
            "--backend",
            &url,
            "--lock",
            "reports",
            "--reason",
            "weekly report",
            "--",
            "echo",
            "hello from the task",
        ],
    )
    .await;
    assert!(task.status.success(), "{task:?}");
    // A lock held, and a task waiting in its line, for the locks page to show both.
    let held = backend
        .acquire(
            &LockRequest::new(
                [LockName::new("reports").unwrap()],
                Owner::new("ops-1").unwrap(),
                Duration::from_secs(600),
            )
            .unwrap()
            .with_reason("quarterly close")
            .unwrap(),
        )
        .await
        .unwrap()
        .granted()
        .unwrap();
    let waiter = LineWaiter::start(
        backend.clone(),
        "reports",
        "task-runner-2",
        "monthly report",
    )
    .await;
    let (serve, server) = serve_in(&dir.0, &url, &[("BATON_API_TOKEN", TOKEN)]).await;

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let walk = tokio::process::Command::new("node")
        .args(["dashboard.mjs", "check"])
        .current_dir(&script_dir)
        .env("BATON_URL", &server)
        .env("BATON_TOKEN", TOKEN)
        .env("BATON_MASTER", "nightly-report")
        .env("BATON_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let walk = tokio::time::timeout(Duration::from_secs(180), walk)
        .await
        .expect("the browser walk finishes within 180s")
        .expect("node runs");
    let serve = terminate(serve).await;
    waiter.cancel().await;
    backend.release_lock(&held).await.unwrap();
    assert!(
        walk.status.success(),
        "the browser walk failed:\n{}\n{}\nbaton serve:\n{}",
        String::from_utf8_lossy(&walk.stdout),
        String::from_utf8_lossy(&walk.stderr),
        String::from_utf8_lossy(&serve.stderr)
    );
    for page in [
        "login", "jobs", "job", "masters", "queues", "workers", "overview",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).is_file(),
            "no screenshot of {page}"
        );
    }
    assert!(serve.status.success(), "{serve:?}");
}
