//! `Faulty` does what each mode says, against the in-memory backend.

use std::time::Duration;

use baton_core::{
    Claim, Dispatch, Error, Heartbeat, ItemId, JobState, Lock, LockName, LockRequest, NewJob,
    Owner, PoolName, Queue, QueueName,
};
use baton_memory::MemoryBackend;
use baton_testkit::conformance::{self, Harness};
use baton_testkit::faulty::{Faulty, Mode, Op};
use serde_json::json;

/// How long to wait for an event before calling it lost.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
const LEASE: Duration = Duration::from_secs(60);

fn names() -> Result<(QueueName, Owner), Error> {
    Ok((QueueName::new("jobs")?, Owner::new("worker")?))
}

fn is_injected<T: std::fmt::Debug>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(error @ Error::Backend { .. }) if error.is_retryable())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_mode_runs_the_whole_suite_green_through_the_wrapper() {
    conformance::run_all(|| async {
        let harness = super::manual_memory().await;
        Harness {
            backend: Faulty::new(harness.backend),
            time: harness.time,
        }
    })
    .await;
}

#[tokio::test]
async fn fail_mode_returns_transient_errors_and_changes_nothing() -> Result<(), Error> {
    let (jobs, worker) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.set_mode(Mode::Fail);
    let pool = PoolName::new("accounts")?;
    let request = LockRequest::new([LockName::new("a")?], worker.clone(), LEASE)?;
    assert!(is_injected(
        &backend.enqueue(&NewJob::new(jobs.clone(), json!(1))?).await
    ));
    assert!(is_injected(&backend.acquire(&request).await));
    assert!(is_injected(&backend.add(&pool, &[ItemId::new("x")?]).await));
    assert!(is_injected(&backend.beat(&worker, LEASE).await));
    assert!(is_injected(&backend.wake(&jobs).await));
    assert_eq!(control.injected(), 5);

    let inner = backend.inner();
    assert_eq!(inner.counts(&jobs).await?.total(), 0);
    assert!(inner.holders().await?.is_empty());
    assert!(inner.items(&pool).await?.is_empty());
    assert!(!inner.alive(&worker).await?);

    control.set_mode(Mode::Pass);
    backend
        .enqueue(&NewJob::new(jobs.clone(), json!(1))?)
        .await?;
    assert_eq!(backend.counts(&jobs).await?.pending, 1);
    Ok(())
}

#[tokio::test]
async fn fail_next_fails_only_the_next_calls() -> Result<(), Error> {
    let (jobs, _) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    backend.control().fail_next(2);
    let job = NewJob::new(jobs.clone(), json!(1))?;
    assert!(is_injected(&backend.enqueue(&job).await));
    assert!(is_injected(&backend.enqueue(&job).await));
    backend.enqueue(&job).await?;
    backend.enqueue(&job).await?;
    assert_eq!(backend.counts(&jobs).await?.pending, 2);
    Ok(())
}

#[tokio::test]
async fn faults_can_be_restricted_to_some_operations() -> Result<(), Error> {
    let (jobs, worker) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.only([Op::Complete]);
    control.set_mode(Mode::Fail);
    let id = backend
        .enqueue(&NewJob::new(jobs.clone(), json!(1))?)
        .await?;
    let reserved = backend
        .reserve(std::slice::from_ref(&jobs), &worker, LEASE, 1)
        .await?;
    assert_eq!(reserved.len(), 1);
    assert!(is_injected(
        &backend.complete(&reserved[0].lease, json!("done")).await
    ));
    let job = backend.get(id).await?.expect("the job exists");
    assert_eq!(job.state, JobState::Running);

    control.all_ops();
    assert!(is_injected(&backend.get(id).await));
    control.heal();
    backend.complete(&reserved[0].lease, json!("done")).await?;
    Ok(())
}

#[tokio::test]
async fn drop_reply_on_enqueue_stores_the_job_but_reports_an_error() -> Result<(), Error> {
    let (jobs, worker) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.only([Op::Enqueue]);
    control.set_mode(Mode::DropReply);
    let result = backend
        .enqueue(&NewJob::new(jobs.clone(), json!("lost reply"))?)
        .await;
    assert!(is_injected(&result), "{result:?}");
    let stored = backend.last(&jobs).await?.expect("the job was stored");
    assert_eq!(stored.payload, json!("lost reply"));
    let reserved = backend
        .reserve(std::slice::from_ref(&jobs), &worker, LEASE, 1)
        .await?;
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].job.id, stored.id);
    Ok(())
}

#[tokio::test]
async fn drop_reply_on_complete_finishes_the_job_and_a_retry_sees_the_lease_lost()
-> Result<(), Error> {
    let (jobs, worker) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    let id = backend
        .enqueue(&NewJob::new(jobs.clone(), json!(1))?)
        .await?;
    let reserved = backend
        .reserve(std::slice::from_ref(&jobs), &worker, LEASE, 1)
        .await?;
    control.only([Op::Complete]);
    control.set_mode(Mode::DropReply);
    let lease = &reserved[0].lease;
    assert!(is_injected(&backend.complete(lease, json!("done")).await));
    control.heal();
    let retried = backend.complete(lease, json!("done")).await;
    assert!(
        matches!(retried, Err(Error::LeaseLost { .. })),
        "{retried:?}"
    );
    let job = backend.get(id).await?.expect("the job exists");
    assert_eq!(job.state, JobState::Succeeded);
    Ok(())
}

#[tokio::test]
async fn stall_holds_a_call_until_the_mode_changes() -> Result<(), Error> {
    let (jobs, _) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.set_mode(Mode::Stall);
    let stalled = backend.clone();
    let job = NewJob::new(jobs.clone(), json!(1))?;
    let call = tokio::spawn(async move { stalled.enqueue(&job).await });
    tokio::time::timeout(EVENT_TIMEOUT, control.wait_for_stalled(1))
        .await
        .expect("the call reaches the stall");
    assert!(!call.is_finished());
    assert_eq!(backend.inner().counts(&jobs).await?.total(), 0);

    control.set_mode(Mode::Pass);
    let id = tokio::time::timeout(EVENT_TIMEOUT, call)
        .await
        .expect("the released call finishes")
        .expect("the call does not panic")?;
    assert_eq!(control.stalled(), 0);
    assert_eq!(backend.last(&jobs).await?.map(|job| job.id), Some(id));
    Ok(())
}

#[tokio::test]
async fn a_stalled_call_follows_the_mode_it_is_released_into() -> Result<(), Error> {
    let (jobs, _) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.set_mode(Mode::Stall);
    let stalled = backend.clone();
    let job = NewJob::new(jobs.clone(), json!(1))?;
    let call = tokio::spawn(async move { stalled.enqueue(&job).await });
    tokio::time::timeout(EVENT_TIMEOUT, control.wait_for_stalled(1))
        .await
        .expect("the call reaches the stall");
    control.set_mode(Mode::Fail);
    let result = tokio::time::timeout(EVENT_TIMEOUT, call)
        .await
        .expect("the released call finishes")
        .expect("the call does not panic");
    assert!(is_injected(&result), "{result:?}");
    assert_eq!(backend.inner().counts(&jobs).await?.total(), 0);
    Ok(())
}

#[tokio::test]
async fn a_stall_on_one_operation_lets_the_others_pass() -> Result<(), Error> {
    let (jobs, worker) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.only([Op::Reserve]);
    control.set_mode(Mode::Stall);
    let stalled = backend.clone();
    let queues = [jobs.clone()];
    let call = tokio::spawn(async move { stalled.reserve(&queues, &worker, LEASE, 1).await });
    tokio::time::timeout(EVENT_TIMEOUT, control.wait_for_stalled(1))
        .await
        .expect("the reserve reaches the stall");
    let id = backend
        .enqueue(&NewJob::new(jobs.clone(), json!(1))?)
        .await?;
    assert_eq!(backend.counts(&jobs).await?.pending, 1);
    control.heal();
    let reserved = tokio::time::timeout(EVENT_TIMEOUT, call)
        .await
        .expect("the released reserve finishes")
        .expect("the call does not panic")?;
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].job.id, id);
    Ok(())
}

#[tokio::test]
async fn a_caller_that_gives_up_on_a_stalled_call_is_counted_out() -> Result<(), Error> {
    let (jobs, _) = names()?;
    let backend = Faulty::new(MemoryBackend::new());
    let control = backend.control();
    control.set_mode(Mode::Stall);
    let stalled = backend.clone();
    let job = NewJob::new(jobs.clone(), json!(1))?;
    let call = tokio::spawn(async move { stalled.enqueue(&job).await });
    tokio::time::timeout(EVENT_TIMEOUT, control.wait_for_stalled(1))
        .await
        .expect("the call reaches the stall");
    call.abort();
    let outcome = call.await;
    assert!(outcome.is_err_and(|error| error.is_cancelled()));
    assert_eq!(control.stalled(), 0);
    control.heal();
    assert_eq!(backend.counts(&jobs).await?.total(), 0);
    Ok(())
}
