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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baton_core::{Backend, Owner};
use baton_sql::TablePrefix;
use baton_tasklocks::{
    Acquired, FairLocks, LockSettings, TaskRunner, TaskSpec, TaskState, Wait, app,
};
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

type BoxedRun = std::pin::Pin<Box<dyn Future<Output = ()>>>;
type RunFactory = Box<dyn Fn() -> BoxedRun>;

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
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let backends = durable_backends();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (kind, url) in &backends {
        let property = "no_two_conflicting_tasks_ever_run_at_once";
        let test = format!("{kind}::{property}");
        if filter.is_empty() || filter.iter().any(|f| test.contains(f.as_str())) {
            ran += 1;
            println!("test {test} ...");
            let config = proptest::test_runner::Config {
                cases: 4,
                failure_persistence: None,
                ..proptest::test_runner::Config::default()
            };
            let outcome =
                proptest::test_runner::TestRunner::new(config).run(&random_task_set(), |tasks| {
                    runtime.block_on(async {
                        let backend = connect(url, &fresh_prefix()).await;
                        conflicting_tasks_never_overlap(backend, tasks).await;
                    });
                    Ok(())
                });
            if let Err(error) = outcome {
                println!("{error}");
                println!("test {test} ... FAILED");
                failed.push(test);
            } else {
                println!("test {test} ... ok");
            }
        }
        let mut all: Vec<(&str, RunFactory)> = Vec::new();
        for (name, scenario) in SCENARIOS {
            let url = url.clone();
            all.push((
                name,
                Box::new(move || {
                    let url = url.clone();
                    Box::pin(async move { scenario(connect(&url, &fresh_prefix()).await).await })
                }),
            ));
        }
        let url = url.clone();
        all.push((
            "a_sigkilled_runner_has_its_locks_taken_over_after_their_ttl",
            Box::new(move || Box::pin(sigkilled_runner_has_its_locks_taken_over(url.clone()))),
        ));
        for (name, run) in all {
            let test = format!("{kind}::{name}");
            if !filter.is_empty() && !filter.iter().any(|f| test.contains(f.as_str())) {
                continue;
            }
            ran += 1;
            println!("test {test} ...");
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run())));
            if outcome.is_ok() {
                println!("test {test} ... ok");
            } else {
                println!("test {test} ... FAILED");
                failed.push(test);
            }
        }
    }
    runtime.block_on(drop_test_tables(&backends));
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for test in failed {
            println!("    {test}");
        }
        ExitCode::FAILURE
    }
}

fn durable_backends() -> Vec<(&'static str, String)> {
    let server = |variable: &str| {
        std::env::var(variable).unwrap_or_else(|_| {
            panic!(
                "{variable} is not set: source .services/env (scripts/services up starts the \
                 servers) before running these tests"
            )
        })
    };
    let file = std::env::temp_dir().join(format!("baton-tasklocks-{}.db", std::process::id()));
    vec![
        ("sqlite", format!("sqlite://{}", file.display())),
        ("postgres", server("BATON_TEST_POSTGRES_URL")),
        ("mysql", server("BATON_TEST_MYSQL_URL")),
        ("redis", server("BATON_TEST_REDIS_URL")),
    ]
}

async fn connect(url: &str, prefix: &str) -> Arc<dyn Backend> {
    let prefix = TablePrefix::new(prefix).unwrap();
    if url.starts_with("sqlite:") {
        let mut config = baton_sqlite::SqliteConfig::new(url);
        config.prefix = prefix;
        Arc::new(baton_sqlite::SqliteBackend::connect(config).await.unwrap())
    } else if url.starts_with("postgres") {
        let mut config = baton_postgres::PostgresConfig::new(url);
        config.prefix = prefix;
        config.max_connections = 8;
        Arc::new(
            baton_postgres::PostgresBackend::connect(config)
                .await
                .unwrap(),
        )
    } else if url.starts_with("redis") {
        let config = baton_redis::RedisConfig {
            prefix: baton_redis::KeyPrefix::new(prefix.as_str()).unwrap(),
            ..baton_redis::RedisConfig::new(url)
        };
        Arc::new(baton_redis::RedisBackend::connect(config).await.unwrap())
    } else {
        let mut config = baton_mysql::MysqlConfig::new(url);
        config.prefix = prefix;
        config.max_connections = 8;
        Arc::new(baton_mysql::MysqlBackend::connect(config).await.unwrap())
    }
}

/// Deletes the keys whose prefix starts with `mine` (each key opens with a `{prefix…` hash tag).
async fn drop_redis_keys(url: &str, mine: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{mine}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

static SCENARIO_COUNTER: AtomicU32 = AtomicU32::new(0);

fn mine() -> String {
    format!("tl{}_", std::process::id())
}

/// Tables of their own for one scenario.
fn fresh_prefix() -> String {
    let n = SCENARIO_COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}{n}_", mine())
}

/// Removes what the scenarios left behind: the SQLite file, and the tables under this
/// process's prefix on the servers.
async fn drop_test_tables(backends: &[(&str, String)]) {
    let mine = mine();
    for (kind, url) in backends {
        if let Some(path) = url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        } else if *kind == "postgres" {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, $1)",
            )
            .bind(&mine)
            .fetch_all(&pool)
            .await
            .unwrap();
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP TABLE IF EXISTS \"{table}\" CASCADE"
                )))
                .execute(&pool)
                .await
                .unwrap();
            }
        } else if *kind == "redis" {
            drop_redis_keys(url, &mine).await;
        } else {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ?",
            )
            .bind(&mine)
            .bind(&mine)
            .fetch_all(&pool)
            .await
            .unwrap();
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP TABLE IF EXISTS `{table}`"
                )))
                .execute(&pool)
                .await
                .unwrap();
            }
        }
    }
}

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
    let prefix = fresh_prefix();
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
