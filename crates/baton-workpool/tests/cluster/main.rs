//! Three members sharing one pool with `max_parallelism = 4`: on every durable backend they
//! are real child processes (this test binary run again as a member), on the memory backend
//! three members in this process. Every handler logs its start and end to one shared log; one
//! member is killed mid-run (SIGSTOP, the kill noted in the log, then SIGKILL; on the memory
//! backend its tasks are aborted). The log never shows more than four handlers running, every
//! job reaches one terminal state, and every job's completion callback is called once — twice
//! only when the killed member's call was cut short and another member made it again.
//!
//! This binary has its own `main` (`harness = false`): run with `WORKPOOL_MEMBER=1` it is a
//! pool member instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Backend, JobId};
use baton_workpool::{
    EnqueueOptions, HandlerError, JobStatus, Member, Outcome, PoolConfig, RetryBehavior, WorkPool,
};
use serde_json::{Value, json};
use support::{Kind, Location, eventually};

const POOL: &str = "cluster";
const LIMIT: usize = 4;
const JOBS: u64 = 40;
const WAIT: Duration = Duration::from_secs(120);

/// Appends one line to the shared log.
type Log = Arc<dyn Fn(String) + Send + Sync>;

fn main() {
    if std::env::var_os("WORKPOOL_MEMBER").is_some() {
        member_process();
        return;
    }
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let mut failed = Vec::new();
    for kind in Kind::ALL {
        let name = format!(
            "three members never run more than four jobs at once and lose none when one is killed ({})",
            kind.name()
        );
        print!("test {name} ... ");
        std::io::stdout().flush().ok();
        let outcome = std::panic::catch_unwind(|| {
            let runtime = if kind == Kind::Memory {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            }
            .unwrap();
            runtime.block_on(scenario(kind));
        });
        if outcome.is_ok() {
            println!("ok");
        } else {
            println!("FAILED");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {failed:#?}");
        std::process::exit(1);
    }
}

fn member_config() -> PoolConfig {
    let mut config = PoolConfig::new(POOL).unwrap();
    config.max_parallelism = LIMIT;
    config.lease_ttl = Duration::from_secs(2);
    config.poll_interval = Duration::from_millis(100);
    // No member may take every slot: all three run jobs side by side.
    config.member_concurrency = Some(2);
    config
}

/// A member's pool: `work` logs its start and end around a short sleep and fails as its
/// argument says; `record` logs each completion callback.
fn member_pool(backend: Arc<dyn Backend>, log: Log, who: String) -> WorkPool {
    let pool = WorkPool::new(backend, member_config()).unwrap();
    let (l, w) = (log.clone(), who.clone());
    pool.register("work", move |ctx, args| {
        let (log, who) = (l.clone(), w.clone());
        async move {
            log(format!("start {} {who}", ctx.job));
            let end = EndLine(log.clone(), format!("end {} {who}", ctx.job));
            let ms = args["ms"].as_u64().unwrap_or(100);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                () = ctx.cancel.canceled() => {}
            }
            drop(end);
            if args["permanent"].as_bool().unwrap_or(false) {
                return Err(HandlerError::permanent("permanently broken"));
            }
            if u64::from(ctx.attempt) <= args["fail_first"].as_u64().unwrap_or(0) {
                return Err(HandlerError::retryable("flaky"));
            }
            Ok(json!(ctx.job))
        }
    });
    pool.on_complete("record", move |completion| {
        let kind = match completion.outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Canceled => "canceled",
        };
        log(format!("complete:{kind} {} {who}", completion.job));
        async { Ok(()) }
    });
    pool
}

/// Logs the end of a handler however it stops: returning, or dropped by its lease guard.
struct EndLine(Log, String);

impl Drop for EndLine {
    fn drop(&mut self) {
        (self.0)(std::mem::take(&mut self.1));
    }
}

fn file_log(path: &str) -> Log {
    let path = path.to_owned();
    Arc::new(move |line: String| {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .expect("open the shared log");
        // One write of a short line to a file opened for appending is atomic.
        file.write_all(format!("{line}\n").as_bytes())
            .expect("write the shared log");
    })
}

/// A pool member in a child process, until its standard input closes.
fn member_process() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let url = var("WORKPOOL_URL");
    let location = Location {
        kind: Kind::of_url(&url),
        url,
        prefix: var("WORKPOOL_PREFIX"),
    };
    let log = file_log(&var("WORKPOOL_LOG"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let backend = location.connect().await;
        let pool = member_pool(backend, log, std::process::id().to_string());
        let member = pool.start();
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await
        .ok();
        member.shutdown().await;
    });
}

/// The members of one scenario, and how to kill one.
enum Members {
    InProcess(Vec<Option<Member>>, Arc<Mutex<Vec<String>>>),
    Processes(Vec<Child>, String),
}

impl Members {
    fn names(&self) -> Vec<String> {
        match self {
            Members::InProcess(members, _) => (0..members.len()).map(|i| format!("m{i}")).collect(),
            Members::Processes(children, _) => {
                children.iter().map(|c| c.id().to_string()).collect()
            }
        }
    }

    fn log(&self) -> Vec<String> {
        match self {
            Members::InProcess(_, lines) => lines.lock().unwrap().clone(),
            Members::Processes(_, path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Kills member 0 so that nothing it does after the log's `killed` line can happen.
    async fn kill_first(&mut self) {
        match self {
            Members::InProcess(members, lines) => {
                // Members run on this thread: none of them runs between these two steps.
                let mut lines = lines.lock().unwrap();
                lines.push("killed m0".to_owned());
                members[0].take().expect("member 0 runs").abort();
            }
            Members::Processes(children, path) => {
                let pid = children[0].id().to_string();
                let stopped = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
                assert!(stopped.success(), "kill -STOP {pid}");
                eventually("the member to stop", Duration::from_secs(10), || async {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let state = stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .next();
                    matches!(state, Some("T" | "t")).then_some(())
                })
                .await;
                file_log(path)(format!("killed {pid}"));
                children[0].kill().unwrap();
                children[0].wait().unwrap();
            }
        }
    }

    async fn stop(self) {
        match self {
            Members::InProcess(members, _) => {
                for member in members.into_iter().flatten() {
                    member.shutdown().await;
                }
            }
            Members::Processes(children, path) => {
                for mut child in children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The members of a scenario's backend, to which [`Members::add`] adds one at a time.
fn no_members(location: &Location) -> Members {
    if location.kind == Kind::Memory {
        return Members::InProcess(Vec::new(), Arc::default());
    }
    let path = std::env::temp_dir()
        .join(format!(
            "baton-workpool-cluster-{}-{}.log",
            std::process::id(),
            location.prefix
        ))
        .display()
        .to_string();
    let _ = std::fs::remove_file(&path);
    Members::Processes(Vec::new(), path)
}

impl Members {
    /// Starts one more member: a task set in this process, or a child process.
    fn add(&mut self, location: &Location, backend: &Arc<dyn Backend>) {
        match self {
            Members::InProcess(members, lines) => {
                let lines = lines.clone();
                let log: Log = Arc::new(move |line| lines.lock().unwrap().push(line));
                let name = format!("m{}", members.len());
                members.push(Some(member_pool(backend.clone(), log, name).start()));
            }
            Members::Processes(children, path) => {
                let child = Command::new(std::env::current_exe().unwrap())
                    .env("WORKPOOL_MEMBER", "1")
                    .env("WORKPOOL_URL", &location.url)
                    .env("WORKPOOL_PREFIX", &location.prefix)
                    .env("WORKPOOL_LOG", &*path)
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("start a member process");
                children.push(child);
            }
        }
    }
}

/// What job `i` does: some fail once and are retried, some fail permanently.
fn job_args(i: u64) -> Value {
    json!({
        "ms": 60 + (i * 37) % 120,
        "fail_first": u64::from(i % 4 == 1),
        "permanent": i % 9 == 4,
    })
}

async fn scenario(kind: Kind) {
    let location = Location::fresh(kind);
    let backend = location.connect().await;
    // The test's own handle: a client of the pool, never started.
    let client = WorkPool::new(backend.clone(), member_config()).unwrap();
    client.set_max_parallelism(LIMIT).await.unwrap();
    let mut members = no_members(&location);
    members.add(&location, &backend);
    let victim = members.names()[0].clone();

    let retry = RetryBehavior::new(3, Duration::from_millis(50), 2.0);
    let jobs = client
        .enqueue_batch((0..JOBS).map(|i| {
            let options = EnqueueOptions::new()
                .with_retry(retry)
                .on_complete("record", json!({ "i": i }))
                .with_name(format!("job {i}"));
            ("work".to_owned(), job_args(i), options)
        }))
        .await
        .unwrap();
    let expected: BTreeMap<JobId, Value> = jobs
        .iter()
        .zip(0..JOBS)
        .map(|(id, i)| (*id, job_args(i)))
        .collect();

    // The victim starts first, so that it is surely running jobs when it is killed; it takes
    // at most two slots, and the other two members share the rest.
    eventually("the first member to start a job", WAIT, || async {
        (!open_jobs_of(&members.log(), &victim).is_empty()).then_some(())
    })
    .await;
    members.add(&location, &backend);
    members.add(&location, &backend);

    // Kill the victim while it runs a job, some way into the run.
    eventually("the victim to be running a job mid-run", WAIT, || async {
        let log = members.log();
        let ends = log.iter().filter(|l| l.starts_with("end ")).count();
        let open = open_jobs_of(&log, &victim);
        (ends >= 6 && !open.is_empty()).then_some(())
    })
    .await;
    members.kill_first().await;

    // Every job ends, and every completion record is run.
    eventually("every job to finish", WAIT, || async {
        let statuses = client.status_batch(&jobs).await.unwrap();
        statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(JobStatus::is_finished))
            .then_some(())
    })
    .await;
    eventually("every completion record to run", WAIT, || async {
        let counts = backend.counts(client.completion_queue()).await.unwrap();
        (counts.pending + counts.running == 0).then_some(())
    })
    .await;
    let log = members.log();
    members.stop().await;

    // Never more than four running at once.
    let peak = peak_running(&log);
    assert!(peak <= LIMIT, "{peak} handlers ran at once: {log:#?}");
    assert!(
        peak >= 3,
        "the members never ran jobs side by side: {log:#?}"
    );
    let runners: HashSet<&str> = log
        .iter()
        .filter(|l| l.starts_with("start "))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    assert_eq!(runners.len(), 3, "not every member ran jobs: {runners:?}");

    // Every job ended as its argument says, and its callback was called once (twice only if
    // the victim's call was cut short).
    for (job, args) in &expected {
        let JobStatus::Finished { outcome, .. } = client.status(*job).await.unwrap() else {
            panic!("job {job} did not finish")
        };
        let want = if args["permanent"] == json!(true) {
            "failed"
        } else {
            "succeeded"
        };
        match (&outcome, want) {
            (Outcome::Succeeded { result }, "succeeded") => assert_eq!(result, &json!(job)),
            (Outcome::Failed { error }, "failed") => assert_eq!(error, "permanently broken"),
            _ => panic!("job {job} ended {outcome:?}, expected {want}"),
        }
        let calls: Vec<&String> = log
            .iter()
            .filter(|l| l.starts_with("complete:") && l.split(' ').nth(1) == Some(&job.to_string()))
            .collect();
        let by_victim = calls
            .iter()
            .filter(|l| l.ends_with(&format!(" {victim}")))
            .count();
        let by_others = calls.len() - by_victim;
        assert!(
            by_others <= 1 && by_victim <= 1 && !calls.is_empty(),
            "job {job}: callbacks {calls:?}"
        );
        assert!(
            calls
                .iter()
                .all(|l| l.starts_with(&format!("complete:{want} "))),
            "job {job}: callbacks {calls:?}"
        );
    }
    location.clean_up().await;
}

fn open_jobs_of(log: &[String], who: &str) -> HashSet<String> {
    let mut open = HashSet::new();
    for line in log {
        let mut parts = line.split(' ');
        let (event, job, by) = (parts.next(), parts.next(), parts.next());
        if by != Some(who) {
            continue;
        }
        match event {
            Some("start") => open.insert(job.unwrap_or_default().to_owned()),
            Some("end") => open.remove(job.unwrap_or_default()),
            _ => false,
        };
    }
    open
}

/// The most handlers the log shows running at once; a killed member's open handlers end at
/// its `killed` line.
fn peak_running(log: &[String]) -> usize {
    let mut open: HashSet<(String, String)> = HashSet::new();
    let mut peak = 0;
    for line in log {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["start", job, who] => {
                assert!(
                    open.insert(((*who).to_owned(), (*job).to_owned())),
                    "started twice: {line}"
                );
            }
            ["end", job, who] => {
                open.remove(&((*who).to_owned(), (*job).to_owned()));
            }
            ["killed", who] => open.retain(|(by, _)| by != who),
            _ => {}
        }
        peak = peak.max(open.len());
    }
    peak
}
