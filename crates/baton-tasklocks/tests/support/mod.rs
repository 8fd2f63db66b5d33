//! What the task-lock tests share: runners with test timings, tasks that record from inside
//! their process when they start and end, and the scenarios every backend runs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Backend, LockName, Owner};
use baton_tasklocks::{
    FairLocks, LockSettings, RunnerConfig, TaskHandle, TaskRunner, TaskSpec, TaskState, Wait, app,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

/// How long any awaited event may take before the test fails.
pub const WITHIN: Duration = Duration::from_secs(20);

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "baton-tasklocks-{label}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Test timings: a lock TTL of `ttl`, quick polls, a 1 s kill grace.
pub fn config(owner: &str, dir: &Path, ttl: Duration) -> RunnerConfig {
    let mut config = RunnerConfig::new(Owner::new(owner).unwrap(), dir.join("logs"));
    config.locks = LockSettings {
        ttl,
        poll_interval: Duration::from_millis(50),
        stop_margin: (ttl / 4)
            .max(Duration::from_millis(1000))
            .min(ttl / 2 - Duration::from_millis(1)),
    };
    config.kill_grace = Duration::from_millis(1000).min(config.locks.stop_margin);
    config
}

pub fn runner(backend: Arc<dyn Backend>, owner: &str, dir: &Path) -> TaskRunner<dyn Backend> {
    TaskRunner::new(backend, config(owner, dir, Duration::from_secs(30))).unwrap()
}

/// A shell task that appends `start <ns> <label>` to `journal`, runs `body`, then appends
/// `end <ns> <label>`.
pub fn journaled(journal: &Path, label: &str, body: &str) -> TaskSpec {
    let script = format!(
        "echo \"start $(date +%s%N) {label}\" >> '{journal}'; {body}; \
         echo \"end $(date +%s%N) {label}\" >> '{journal}'",
        journal = journal.display()
    );
    TaskSpec::new("sh").arg("-c").arg(script)
}

/// The `[start, end]` interval of each label in `journal`, in nanoseconds.
pub fn intervals(journal: &Path) -> BTreeMap<String, (u128, Option<u128>)> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut out: BTreeMap<String, (u128, Option<u128>)> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(at), Some(label)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("bad journal line {line:?}");
        };
        let at: u128 = at.parse().unwrap();
        match kind {
            "start" => {
                assert!(
                    out.insert(label.to_owned(), (at, None)).is_none(),
                    "{label} started twice"
                );
            }
            "end" => out.get_mut(label).expect("end before start").1 = Some(at),
            _ => panic!("bad journal line {line:?}"),
        }
    }
    out
}

/// Fails if any two of `labels` ran at overlapping times.
pub fn assert_no_overlap(journal: &Path, labels: &[&str]) {
    let all = intervals(journal);
    for (i, a) in labels.iter().enumerate() {
        for b in &labels[i + 1..] {
            let (a_start, a_end) = all[*a];
            let (b_start, b_end) = all[*b];
            let (a_end, b_end) = (
                a_end.expect("a task never ended"),
                b_end.expect("a task never ended"),
            );
            assert!(
                a_end <= b_start || b_end <= a_start,
                "{a} [{a_start}, {a_end}] and {b} [{b_start}, {b_end}] overlap"
            );
        }
    }
}

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WITHIN:?}"))
}

pub async fn finished(handle: &TaskHandle) -> baton_tasklocks::TaskRecord {
    within(&format!("task {} ending", handle.id()), handle.finished()).await
}

pub async fn running(handle: &TaskHandle) -> baton_tasklocks::TaskRecord {
    let record = within(
        &format!("task {} starting", handle.id()),
        handle.wait_until(|r| r.state == TaskState::Running),
    )
    .await;
    assert_eq!(record.state, TaskState::Running, "{record:?}");
    record
}

pub async fn waiting(handle: &TaskHandle) -> baton_tasklocks::TaskRecord {
    let record = within(
        &format!("task {} telling why it waits", handle.id()),
        handle.wait_until(|r| r.waiting_for.is_some()),
    )
    .await;
    assert_eq!(record.state, TaskState::Waiting, "{record:?}");
    record
}

/// Waits until `path` exists.
pub async fn file_appears(path: &Path) {
    within(&format!("{} appearing", path.display()), async {
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Scenarios: each takes a fresh backend.

/// Two tasks on different apps run at once: each waits, inside its process, for the other to
/// have started, and gives up (failing) after 10 s.
pub async fn tasks_on_different_apps_run_at_once(backend: Arc<dyn Backend>) {
    let dir = Scratch::new("parallel");
    let runner = runner(backend, "runner-a", dir.path());
    let rendezvous = |me: &str, other: &str| {
        format!(
            "touch '{d}/{me}'; i=0; while [ ! -f '{d}/{other}' ]; do i=$((i+1)); \
             [ $i -gt 1000 ] && exit 1; sleep 0.01; done",
            d = dir.path().display()
        )
    };
    let journal = dir.path().join("journal");
    let one = runner
        .run(
            journaled(&journal, "one", &rendezvous("one", "two"))
                .lock(app(1).unwrap())
                .reason("backup of app 1"),
        )
        .unwrap();
    let two = runner
        .run(
            journaled(&journal, "two", &rendezvous("two", "one"))
                .lock(app(2).unwrap())
                .reason("backup of app 2"),
        )
        .unwrap();
    let (one, two) = (finished(&one).await, finished(&two).await);
    assert_eq!(one.state, TaskState::Succeeded, "{one:?}");
    assert_eq!(two.state, TaskState::Succeeded, "{two:?}");
    assert_eq!(one.exit_code, Some(0));
    let all = intervals(&journal);
    let (a, b) = (all["one"], all["two"]);
    assert!(
        a.0 < b.1.unwrap() && b.0 < a.1.unwrap(),
        "they did not overlap: {all:?}"
    );
}

/// Four tasks on one app never overlap, and a task on another app is not held up by them.
pub async fn tasks_on_one_app_never_overlap(backend: Arc<dyn Backend>) {
    let dir = Scratch::new("serial");
    let runner = runner(backend, "runner-a", dir.path());
    let journal = dir.path().join("journal");
    let labels = ["t1", "t2", "t3", "t4"];
    let handles: Vec<TaskHandle> = labels
        .iter()
        .map(|label| {
            runner
                .run(
                    journaled(&journal, label, "sleep 0.15")
                        .lock(app(7).unwrap())
                        .reason(format!("update of app 7 ({label})")),
                )
                .unwrap()
        })
        .collect();
    for handle in &handles {
        let record = finished(handle).await;
        assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
        assert!(record.started_at.unwrap() <= record.ended_at.unwrap());
    }
    assert_no_overlap(&journal, &labels);
    assert_eq!(runner.list().len(), 4);
    let log = runner.read_log(handles[3].id()).unwrap();
    assert!(log.contains("running as pid"), "{log}");
}

/// A waiting task names the holder and its reason; a task told not to wait fails at once,
/// naming it too; a task SIGKILLed from outside frees its locks at once (well within their
/// 30 s TTL), and the waiter runs.
pub async fn sigkilled_task_frees_its_locks_at_once_and_waiters_are_told_why(
    backend: Arc<dyn Backend>,
) {
    let dir = Scratch::new("sigkill");
    let runner_a = runner(backend.clone(), "runner-a", dir.path());
    let runner_b = runner(backend, "runner-b", dir.path());
    let holder = runner_a
        .run(
            TaskSpec::new("sleep")
                .arg("600")
                .lock(app(42).unwrap())
                .reason("backup of app 42"),
        )
        .unwrap();
    let held = running(&holder).await;
    let waiter = runner_b
        .run(
            TaskSpec::new("true")
                .lock(app(42).unwrap())
                .lock(baton_tasklocks::task_type("apptask").unwrap()),
        )
        .unwrap();
    let waiting = waiting(&waiter).await;
    assert_eq!(
        waiting.waiting_for.as_deref(),
        Some(format!("waiting for task {} (backup of app 42) to finish", held.id).as_str())
    );
    let impatient = runner_b
        .run(
            TaskSpec::new("true")
                .lock(app(42).unwrap())
                .wait(Wait::NoWait),
        )
        .unwrap();
    let refused = finished(&impatient).await;
    assert_eq!(refused.state, TaskState::Failed);
    assert_eq!(refused.failure, Some(baton_tasklocks::Failure::LocksBusy));
    assert!(refused.started_at.is_none());
    let error = refused.error.unwrap();
    assert!(
        error.contains(&format!("task {} (backup of app 42)", held.id)),
        "{error}"
    );

    let killed_at = Instant::now();
    kill(
        Pid::from_raw(i32::try_from(held.pid.unwrap()).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    let ended = finished(&holder).await;
    assert_eq!(ended.state, TaskState::Failed);
    assert_eq!(ended.signal, Some(9));
    // The waiter runs `true`, which may end before its running state can be seen: look for
    // its start instead.
    let started = within(
        "the waiter starting",
        waiter.wait_until(|r| r.started_at.is_some()),
    )
    .await;
    assert!(started.started_at.is_some(), "{started:?}");
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the waiter started {took:?} after the kill"
    );
    assert_eq!(finished(&waiter).await.state, TaskState::Succeeded);
}

/// `kill` sends SIGTERM to the task's process group and SIGKILL after the grace period to a
/// task that ignores SIGTERM; the task and a child it started are gone and its locks are free.
pub async fn kill_stops_the_whole_group_and_frees_the_locks(backend: Arc<dyn Backend>) {
    let dir = Scratch::new("kill");
    let runner = runner(backend.clone(), "runner-a", dir.path());
    let child_pid = dir.path().join("child.pid");
    let script = format!(
        "trap '' TERM; sleep 600 & echo $! > '{p}.tmp'; mv '{p}.tmp' '{p}'; wait; wait",
        p = child_pid.display()
    );
    let task = runner
        .run(
            TaskSpec::new("sh")
                .arg("-c")
                .arg(script)
                .lock(app(5).unwrap())
                .reason("restore of app 5"),
        )
        .unwrap();
    running(&task).await;
    file_appears(&child_pid).await;
    let grandchild: i32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let record = within("kill", runner.kill(task.id())).await.unwrap();
    assert_eq!(record.state, TaskState::Killed);
    assert_eq!(
        record.signal,
        Some(9),
        "SIGTERM was ignored, so SIGKILL ended it: {record:?}"
    );
    // SIGKILL was sent to the group before the record said killed; its delivery to the
    // grandchild (now a child of init) completes asynchronously.
    within("the task's child dying", async {
        while alive(grandchild) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let log = runner.read_log(task.id()).unwrap();
    assert!(log.contains("SIGKILL"), "{log}");
    let locks = FairLocks::new(
        backend,
        Owner::new("checker").unwrap(),
        LockSettings::default(),
    )
    .unwrap();
    let (_cancel_tx, mut cancel) = tokio::sync::watch::channel(false);
    let got = locks
        .acquire(
            &[app(5).unwrap()],
            "check",
            Wait::NoWait,
            &mut |_| {},
            &mut cancel,
        )
        .await
        .unwrap();
    assert!(
        matches!(got, baton_tasklocks::Acquired::Granted(_)),
        "{got:?}"
    );
}

/// Whether `pid` names a live process (not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waiters for one app are served in the order they came, even though the backend grants a
/// free lock to whoever asks first.
pub async fn waiters_are_served_in_the_order_they_came(backend: Arc<dyn Backend>) {
    let dir = Scratch::new("fifo");
    let runners: Vec<TaskRunner<dyn Backend>> = (0..3)
        .map(|i| runner(backend.clone(), &format!("runner-{i}"), dir.path()))
        .collect();
    let journal = dir.path().join("journal");
    let gate = dir.path().join("gate");
    let holder = runners[0]
        .run(
            journaled(
                &journal,
                "holder",
                &format!("while [ ! -f '{}' ]; do sleep 0.01; done", gate.display()),
            )
            .lock(app(9).unwrap())
            .reason("holder"),
        )
        .unwrap();
    running(&holder).await;
    let mut waiters = Vec::new();
    for i in 0..5 {
        let spec = journaled(&journal, &format!("w{i}"), "sleep 0.02")
            .lock(app(9).unwrap())
            .reason(format!("waiter {i}"));
        let handle = runners[i % 3].run(spec).unwrap();
        waiting(&handle).await;
        waiters.push(handle);
    }
    std::fs::write(&gate, "").unwrap();
    for handle in &waiters {
        assert_eq!(finished(handle).await.state, TaskState::Succeeded);
    }
    let all = intervals(&journal);
    let starts: Vec<u128> = (0..5).map(|i| all[&format!("w{i}")].0).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "served out of order: {all:?}"
    );
}

pub fn app_lock(id: u32) -> LockName {
    app(id).unwrap()
}

/// One random task: which of four locks it holds, and how long it sleeps.
#[derive(Clone, Debug)]
pub struct RandomTask {
    pub locks: Vec<usize>,
    pub sleep_ms: u64,
}

/// Two to six random tasks over four locks.
pub fn random_task_set() -> impl proptest::strategy::Strategy<Value = Vec<RandomTask>> {
    use proptest::strategy::Strategy;
    let task = (
        proptest::sample::subsequence(vec![0, 1, 2, 3], 1..=3),
        0_u64..40,
    )
        .prop_map(|(locks, sleep_ms)| RandomTask { locks, sleep_ms });
    proptest::collection::vec(task, 2..7)
}

/// Runs `tasks` at once over two runners and checks that no two tasks sharing a lock ran at
/// once (as their processes recorded it) and that every task ended successfully.
pub async fn conflicting_tasks_never_overlap(backend: Arc<dyn Backend>, tasks: Vec<RandomTask>) {
    let dir = Scratch::new("prop");
    let runners = [
        runner(backend.clone(), "runner-a", dir.path()),
        runner(backend, "runner-b", dir.path()),
    ];
    let journal = dir.path().join("journal");
    let names: Vec<LockName> = (0..4)
        .map(|i| baton_tasklocks::task_lock(format!("res:{i}")).unwrap())
        .collect();
    let mut handles = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let sleep = format!("sleep {}", task.sleep_ms as f64 / 1000.0);
        let mut spec = journaled(&journal, &format!("t{i}"), &sleep);
        for lock in &task.locks {
            spec = spec.lock(names[*lock].clone());
        }
        handles.push(runners[i % 2].run(spec).unwrap());
    }
    for handle in &handles {
        let record = finished(handle).await;
        assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    }
    let all = intervals(&journal);
    for (i, a) in tasks.iter().enumerate() {
        for (j, b) in tasks.iter().enumerate().skip(i + 1) {
            if a.locks.iter().any(|l| b.locks.contains(l)) {
                assert_no_overlap(&journal, &[&format!("t{i}"), &format!("t{j}")]);
            }
        }
        assert!(all[&format!("t{i}")].1.is_some(), "task {i} never ended");
    }
}
