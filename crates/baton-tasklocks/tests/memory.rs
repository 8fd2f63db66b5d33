//! The task runner on the in-memory backend, with real child processes: the scenarios every
//! backend runs, and a property test over random task sets with overlapping locks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use baton_core::{Backend, ManualClock, Owner, Timestamp};
use baton_memory::MemoryBackend;
use baton_tasklocks::{Acquired, Blocked, FairLocks, LockSettings, TaskSpec, TaskState, Wait, app};
use proptest::prelude::{ProptestConfig, proptest};
use support::*;
use tokio::sync::watch;

fn memory() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_on_different_apps_run_at_once() {
    tasks_on_different_apps_run_at_once(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_one_app_never_overlap() {
    support::tasks_on_one_app_never_overlap(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_task_frees_its_locks_at_once_and_waiters_are_told_why() {
    sigkilled_task_frees_its_locks_at_once_and_waiters_are_told_why(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_the_whole_process_group_and_frees_the_locks() {
    kill_stops_the_whole_group_and_frees_the_locks(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_for_one_app_are_served_in_the_order_they_came() {
    waiters_are_served_in_the_order_they_came(memory()).await;
}

/// A waiter that dies while in line (its process gone, its entries no longer renewed) holds
/// later waiters up only until its entries expire; meanwhile they are told whom they wait
/// behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_died_leaves_the_line_when_its_entries_expire() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::with_clock(Arc::new(clock.clone())));
    let settings = LockSettings {
        ttl: Duration::from_secs(30),
        poll_interval: Duration::from_millis(20),
        stop_margin: Duration::from_secs(1),
    };
    let locks = |owner: &str| {
        FairLocks::new(
            backend.clone(),
            Owner::new(owner).unwrap(),
            settings.clone(),
        )
        .unwrap()
    };
    let (_never, cancel) = watch::channel(false);
    let names = [app(3).unwrap()];
    let Acquired::Granted(holder) = locks("holder")
        .acquire(
            &names,
            "backup of app 3",
            Wait::NoWait,
            &mut |_| {},
            &mut cancel.clone(),
        )
        .await
        .unwrap()
    else {
        panic!("app:3 is free");
    };
    // The doomed waiter gets in line, then its process "dies": the task is aborted mid-wait.
    let (told_tx, mut told) = tokio::sync::mpsc::unbounded_channel();
    let doomed = {
        let locks = locks("doomed");
        let names = names.clone();
        let mut cancel = cancel.clone();
        tokio::spawn(async move {
            let mut on_wait = |blocked: &Blocked| {
                let _ = told_tx.send(blocked.message());
            };
            locks
                .acquire(
                    &names,
                    "restore of app 3",
                    Wait::Forever,
                    &mut on_wait,
                    &mut cancel,
                )
                .await
        })
    };
    let message = within("the doomed waiter waiting", told.recv())
        .await
        .unwrap();
    assert_eq!(message, "waiting for backup of app 3 to finish");
    doomed.abort();
    let _ = doomed.await;
    holder.release().await.unwrap();

    let (said_tx, mut said) = tokio::sync::mpsc::unbounded_channel();
    let late = {
        let locks = locks("late");
        let names = names.clone();
        let mut cancel = cancel.clone();
        tokio::spawn(async move {
            let mut on_wait = |blocked: &Blocked| {
                let _ = said_tx.send(blocked.message());
            };
            locks
                .acquire(
                    &names,
                    "update of app 3",
                    Wait::Forever,
                    &mut on_wait,
                    &mut cancel,
                )
                .await
        })
    };
    let message = within("the late waiter waiting", said.recv())
        .await
        .unwrap();
    assert_eq!(message, "waiting behind restore of app 3 queued earlier");
    assert!(
        !late.is_finished(),
        "the late waiter overtook the one in line"
    );
    clock.advance(Duration::from_secs(31));
    let got = within("the late waiter served", late)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(got, Acquired::Granted(_)), "{got:?}");
}

/// Killing a task that waits for its locks takes it out of the line at once: it never runs,
/// and a task that will not wait gets the locks as soon as their holder is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_while_waiting_leaves_the_line_at_once() {
    let dir = Scratch::new("kill-waiting");
    let runner = runner(memory(), "runner-a", dir.path());
    let holder = runner
        .run(TaskSpec::new("sleep").arg("600").lock(app(4).unwrap()))
        .unwrap();
    running(&holder).await;
    let waiter = runner
        .run(TaskSpec::new("true").lock(app(4).unwrap()))
        .unwrap();
    waiting(&waiter).await;
    let killed = within("killing the waiter", runner.kill(waiter.id()))
        .await
        .unwrap();
    assert_eq!(killed.state, TaskState::Killed);
    assert_eq!(killed.started_at, None);
    within("killing the holder", runner.kill(holder.id()))
        .await
        .unwrap();
    let next = runner
        .run(
            TaskSpec::new("true")
                .lock(app(4).unwrap())
                .wait(Wait::NoWait),
        )
        .unwrap();
    let next = finished(&next).await;
    assert_eq!(next.state, TaskState::Succeeded, "{next:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random task sets over two runners: no two tasks sharing a lock ever ran at once (as
    /// their processes recorded it), and every task ended successfully.
    #[test]
    fn no_two_conflicting_tasks_ever_run_at_once(tasks in random_task_set()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(conflicting_tasks_never_overlap(memory(), tasks));
    }
}
