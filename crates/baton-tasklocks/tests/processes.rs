//! The task runner on every durable backend, with real processes: the scenarios the memory
//! backend runs, plus a runner killed with SIGKILL whose locks are taken over once their TTL
//! has passed.
//!
//! This binary is its own child: run with `BATON_TASKLOCKS_PROBE_URL` set, it is a probe, a
//! runner that runs one task holding `app:1` and prints the task's pid once it runs. Without it,
//! it runs the scenarios on SQLite (a temporary file), PostgreSQL, MariaDB/MySQL and Redis, whose
//! URLs come from `BATON_TEST_POSTGRES_URL`, `BATON_TEST_MYSQL_URL` and `BATON_TEST_REDIS_URL`
//! (missing ones fail).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Backend, Owner};
use baton_tasklocks::{
    Acquired, FairLocks, LockSettings, TaskRunner, TaskSpec, TaskState, Wait, app,
};
use baton_testservers::{Durable, Runner, connect, durable_backends, fresh_prefix, process_prefix};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

const PROBE_URL: &str = "BATON_TASKLOCKS_PROBE_URL";
const PROBE_PREFIX: &str = "BATON_TASKLOCKS_PROBE_PREFIX";
const PROBE_DIR: &str = "BATON_TASKLOCKS_PROBE_DIR";
/// The lock TTL of the probe runner.
const PROBE_TTL: Duration = Duration::from_secs(3);

type Scenario = fn(Arc<dyn Backend>) -> std::pin::Pin<Box<dyn Future<Output = ()>>>;

const SCENARIOS: [(&str, Scenario); 5] = [
    ("two_tasks_on_different_apps_run_at_once", |b| {
        Box::pin(tasks_on_different_apps_run_at_once(b))
    }),
    ("tasks_on_one_app_never_overlap", |b| {
        Box::pin(tasks_on_one_app_never_overlap(b))
    }),
    (
        "a_sigkilled_task_frees_its_locks_at_once_and_waiters_are_told_why",
        |b| Box::pin(sigkilled_task_frees_its_locks_at_once_and_waiters_are_told_why(b)),
    ),
    (
        "kill_stops_the_whole_process_group_and_frees_the_locks",
        |b| Box::pin(kill_stops_the_whole_group_and_frees_the_locks(b)),
    ),
    (
        "waiters_for_one_app_are_served_in_the_order_they_came",
        |b| Box::pin(waiters_are_served_in_the_order_they_came(b)),
    ),
];

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(url) = std::env::var(PROBE_URL) {
        runtime.block_on(probe(url));
        return ExitCode::SUCCESS;
    }
    let mut runner = Runner::from_args();
    let backends = durable_backends("tasklocks");
    for Durable { kind, url } in &backends {
        runner.run(
            &format!("{kind}::no_two_conflicting_tasks_ever_run_at_once"),
            || {
                let config = proptest::test_runner::Config {
                    cases: 4,
                    failure_persistence: None,
                    ..proptest::test_runner::Config::default()
                };
                let outcome = proptest::test_runner::TestRunner::new(config).run(
                    &random_task_set(),
                    |tasks| {
                        runtime.block_on(async {
                            let backend = connect(url, &fresh_prefix(TAG)).await;
                            conflicting_tasks_never_overlap(backend, tasks).await;
                        });
                        Ok(())
                    },
                );
                if let Err(error) = outcome {
                    panic!("{error}");
                }
            },
        );
        for (name, scenario) in SCENARIOS {
            runner.run(&format!("{kind}::{name}"), || {
                runtime.block_on(async {
                    scenario(connect(url, &fresh_prefix(TAG)).await).await;
                });
            });
        }
        runner.run(
            &format!("{kind}::a_sigkilled_runner_has_its_locks_taken_over_after_their_ttl"),
            || runtime.block_on(sigkilled_runner_has_its_locks_taken_over(url.clone())),
        );
    }
    runtime.block_on(baton_testservers::drop_all(&backends, &process_prefix(TAG)));
    runner.finish()
}

/// The tag of this binary's table and key prefixes.
const TAG: &str = "tl";

// ---------------------------------------------------------------------------------------------
// The probe: a runner in a process of its own.

async fn probe(url: String) {
    let prefix = std::env::var(PROBE_PREFIX).unwrap();
    let dir = std::path::PathBuf::from(std::env::var(PROBE_DIR).unwrap());
    let backend = connect(&url, &prefix).await;
    let runner = TaskRunner::new(backend, config("probe-runner", &dir, PROBE_TTL)).unwrap();
    let task = runner
        .run(
            TaskSpec::new("sleep")
                .arg("600")
                .lock(app(1).unwrap())
                .reason("backup of app 1"),
        )
        .unwrap();
    let record = task.wait_until(|r| r.state == TaskState::Running).await;
    println!(
        "running pid={} token={}",
        record.pid.unwrap_or(0),
        record.token.map_or(0, |t| t.get())
    );
    std::future::pending::<()>().await;
}

/// A runner (a process of its own) holds `app:1` for a running task and is killed with
/// SIGKILL: nobody frees its locks, so a waiter gets them once their 3 s TTL has passed, not
/// before, and with a greater fencing token.
async fn sigkilled_runner_has_its_locks_taken_over(url: String) {
    let dir = Scratch::new("probe");
    let prefix = fresh_prefix(TAG);
    let backend = connect(&url, &prefix).await;
    let mut probe = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(PROBE_URL, &url)
        .env(PROBE_PREFIX, &prefix)
        .env(PROBE_DIR, dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(probe.stdout.take().unwrap()).lines();
    let line = within("the probe's task running", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let fields: std::collections::HashMap<&str, u64> = line
        .strip_prefix("running ")
        .unwrap()
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, v.parse().unwrap())
        })
        .collect();
    let task_pid = i32::try_from(fields["pid"]).unwrap();

    let locks = FairLocks::new(
        backend,
        Owner::new("taker").unwrap(),
        LockSettings {
            ttl: Duration::from_secs(10),
            poll_interval: Duration::from_millis(50),
            stop_margin: Duration::from_secs(1),
        },
    )
    .unwrap();
    let (_cancel_tx, mut cancel) = tokio::sync::watch::channel(false);
    let busy = locks
        .acquire(
            &[app(1).unwrap()],
            "taker",
            Wait::NoWait,
            &mut |_| {},
            &mut cancel,
        )
        .await
        .unwrap();
    let Acquired::Busy(blocked) = busy else {
        panic!("app:1 was free while the probe held it: {busy:?}")
    };
    assert_eq!(
        blocked.message(),
        "waiting for task 1 (backup of app 1) to finish"
    );
    let expiry = blocked.holders[0].lease.expires_at();

    kill(
        Pid::from_raw(i32::try_from(probe.id().unwrap()).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    probe.wait().await.unwrap();
    let killed_at = Instant::now();
    let got = within(
        "the locks of the dead runner being taken over",
        locks.acquire(
            &[app(1).unwrap()],
            "taker",
            Wait::For(Duration::from_secs(15)),
            &mut |_| {},
            &mut cancel,
        ),
    )
    .await
    .unwrap();
    let took = killed_at.elapsed();
    // The orphaned task keeps running (nothing runs in a SIGKILLed process); end it here.
    let _ = killpg(Pid::from_raw(task_pid), Signal::SIGKILL);
    let Acquired::Granted(held) = got else {
        panic!("not taken over: {got:?}")
    };
    assert!(
        held.token().get() > fields["token"],
        "the new token must be greater"
    );
    let granted_expiry = held.lease().lease.expires_at();
    assert!(
        granted_expiry.saturating_sub(Duration::from_secs(10)) >= expiry,
        "granted at {granted_expiry} minus its 10 s ttl, before the old lease's expiry {expiry}"
    );
    assert!(
        took < PROBE_TTL + Duration::from_secs(4),
        "taken over {took:?} after the kill"
    );
    held.release().await.unwrap();
}
