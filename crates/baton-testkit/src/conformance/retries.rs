//! Cases for a job's attempts after reservation: retries by policy or by request, expiry of a
//! worker's lease and its requeue, and keeping a lease alive.

use std::time::Duration;

use baton_core::{AttemptOutcome, Backend, Job, JobState, Retry, RetryPolicy};
use serde_json::json;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, SHORT_TTL, ensure, expect_last_outcome, expect_nothing_due,
    immediate_retries, job, job_with_retry, owner, queue, reserve_one,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "a failure retried by policy waits for the backoff and the last attempt fails the job",
            retry_by_policy
        ),
        case!(
            "a failure with retry never fails the job at once",
            retry_never
        ),
        case!(
            "a failure with retry after a delay waits that delay",
            retry_after_delay
        ),
        case!(
            "retry after a delay still respects the policy's attempt limit",
            retry_after_limit
        ),
        case!(
            "requeue_expired hands a dead worker's job out again with a higher token",
            requeue_hands_out_again
        ),
        case!(
            "requeue_expired fails a job whose policy has no attempts left",
            requeue_fails_exhausted
        ),
        case!(
            "requeue_expired leaves live leases alone and acts once per expiry",
            requeue_once
        ),
        case!(
            "touching a job before expiry keeps it past its first ttl",
            touch_extends
        ),
    ]
}

/// Checks that `job` is pending again and due `delay` after its last attempt ended.
fn expect_retry_scheduled(job: &Job, delay: Duration) -> CaseResult {
    ensure!(
        job.state == JobState::Pending,
        "job is {} after a retryable failure",
        job.state
    );
    ensure!(
        job.lease.is_none(),
        "a pending job keeps lease {:?}",
        job.lease
    );
    let ended = job
        .history
        .last()
        .and_then(|attempt| attempt.finished_at)
        .ctx("end of the failed attempt")?;
    let waits = job.run_at.duration_since(ended);
    ensure!(
        waits + Duration::from_millis(5) >= delay && waits <= delay + Duration::from_secs(2),
        "retry due {waits:?} after the failure, expected {delay:?}"
    );
    Ok(())
}

fn failed_with(error: &str) -> AttemptOutcome {
    AttemptOutcome::Failed {
        error: error.to_owned(),
    }
}

async fn retry_by_policy<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let backoff = SHORT_TTL;
    let policy = RetryPolicy::exponential(3, backoff);
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), policy)?)
        .await
        .ctx("enqueue")?;
    let worker = owner("worker")?;
    for attempt in 1..=2_u32 {
        let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
        ensure!(
            reserved.job.attempts == attempt,
            "attempt {attempt} counted as {}",
            reserved.job.attempts
        );
        let error = format!("boom {attempt}");
        let job = h
            .backend
            .fail(&reserved.lease, &error, Retry::ByPolicy)
            .await
            .ctx("fail")?;
        let delay = policy.delay_with_jitter(attempt, 0.5);
        expect_retry_scheduled(&job, delay)?;
        ensure!(
            job.error.as_deref() == Some(error.as_str()),
            "job error is {:?}",
            job.error
        );
        expect_last_outcome(&job, &failed_with(&error))?;
        expect_nothing_due(
            &h.backend,
            &jobs,
            &format!("before the backoff after attempt {attempt}"),
        )
        .await?;
        h.time.pass(delay + (PAST_SHORT_TTL - SHORT_TTL)).await;
    }
    let last = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        last.job.attempts == 3,
        "third attempt counted as {}",
        last.job.attempts
    );
    let job = h
        .backend
        .fail(&last.lease, "boom 3", Retry::ByPolicy)
        .await
        .ctx("fail")?;
    ensure!(
        job.state == JobState::Failed,
        "after its last attempt failed the job is {}",
        job.state
    );
    ensure!(
        job.finished_at.is_some() && job.lease.is_none(),
        "failed job: {job:?}"
    );
    ensure!(
        job.error.as_deref() == Some("boom 3"),
        "job error is {:?}",
        job.error
    );
    let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome.clone()).collect();
    let expected: Vec<_> = (1..=3)
        .map(|n| Some(failed_with(&format!("boom {n}"))))
        .collect();
    ensure!(outcomes == expected, "history outcomes: {outcomes:?}");
    let numbers: Vec<u32> = job.history.iter().map(|a| a.number).collect();
    ensure!(numbers == [1, 2, 3], "attempt numbers: {numbers:?}");
    h.time.pass(PAST_SHORT_TTL).await;
    expect_nothing_due(&h.backend, &jobs, "after the job failed").await?;
    let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        stored.state == JobState::Failed,
        "stored job is {}",
        stored.state
    );
    Ok(())
}

async fn retry_never<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    h.backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(5))?)
        .await
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    let job = h
        .backend
        .fail(&reserved.lease, "permanent", Retry::Never)
        .await
        .ctx("fail")?;
    ensure!(
        job.state == JobState::Failed,
        "a job failed with retry never is {}",
        job.state
    );
    ensure!(
        job.attempts == 1 && job.finished_at.is_some(),
        "failed job: {job:?}"
    );
    expect_last_outcome(&job, &failed_with("permanent"))?;
    expect_nothing_due(&h.backend, &jobs, "after retry never").await?;
    Ok(())
}

async fn retry_after_delay<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(3))?)
        .await
        .ctx("enqueue")?;
    let worker = owner("worker")?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let job = h
        .backend
        .fail(&reserved.lease, "rate limited", Retry::After(SHORT_TTL))
        .await
        .ctx("fail")?;
    expect_retry_scheduled(&job, SHORT_TTL)?;
    expect_nothing_due(&h.backend, &jobs, "before the requested delay").await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let again = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        again.job.id == id && again.job.attempts == 2,
        "after the delay reserved {:?}",
        again.job
    );
    Ok(())
}

async fn retry_after_limit<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    h.backend
        .enqueue(&job_with_retry(&jobs, json!("once"), RetryPolicy::never())?)
        .await
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let job = h
        .backend
        .fail(&reserved.lease, "no", Retry::After(Duration::ZERO))
        .await
        .ctx("fail")?;
    ensure!(
        job.state == JobState::Failed,
        "a one-attempt job failed with retry after is {}",
        job.state
    );
    h.backend
        .enqueue(&job_with_retry(
            &jobs,
            json!("twice"),
            immediate_retries(2),
        )?)
        .await
        .ctx("enqueue")?;
    for attempt in 1..=2 {
        let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
        let job = h
            .backend
            .fail(&reserved.lease, "no", Retry::After(Duration::ZERO))
            .await
            .ctx("fail")?;
        let expected = if attempt == 1 {
            JobState::Pending
        } else {
            JobState::Failed
        };
        ensure!(
            job.state == expected,
            "after attempt {attempt} of 2 the job is {}",
            job.state
        );
    }
    expect_nothing_due(&h.backend, &jobs, "after the last attempt").await?;
    Ok(())
}

async fn requeue_hands_out_again<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(3))?)
        .await
        .ctx("enqueue")?;
    let dead = reserve_one(&h.backend, &jobs, &owner("dead-worker")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        requeued == vec![id],
        "requeue_expired returned {requeued:?}"
    );
    let job = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.state == JobState::Pending && job.lease.is_none(),
        "requeued job: {job:?}"
    );
    ensure!(job.error.is_some(), "a requeued job records no error");
    expect_last_outcome(&job, &AttemptOutcome::Expired)?;
    let live = owner("live-worker")?;
    let again = reserve_one(&h.backend, &jobs, &live, LONG_TTL).await?;
    ensure!(
        again.job.id == id && again.job.attempts == 2,
        "reserved again as {:?}",
        again.job
    );
    ensure!(
        again.lease.lease.token() > dead.lease.lease.token(),
        "token {} not above the dead worker's {}",
        again.lease.lease.token(),
        dead.lease.lease.token()
    );
    let owners: Vec<&str> = again.job.history.iter().map(|a| a.owner.as_str()).collect();
    ensure!(
        owners == ["dead-worker", "live-worker"],
        "history owners: {owners:?}"
    );
    h.backend
        .complete(&again.lease, json!("ok"))
        .await
        .ctx("complete")?;
    Ok(())
}

async fn requeue_fails_exhausted<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), RetryPolicy::never())?)
        .await
        .ctx("enqueue")?;
    reserve_one(&h.backend, &jobs, &owner("dead-worker")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        requeued == vec![id],
        "requeue_expired returned {requeued:?}"
    );
    let job = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.state == JobState::Failed,
        "an expired job with no attempts left is {}",
        job.state
    );
    ensure!(
        job.finished_at.is_some() && job.lease.is_none(),
        "failed job: {job:?}"
    );
    expect_last_outcome(&job, &AttemptOutcome::Expired)?;
    expect_nothing_due(&h.backend, &jobs, "after the job failed").await?;
    Ok(())
}

async fn requeue_once<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    for n in 0..2 {
        h.backend
            .enqueue(&job_with_retry(&jobs, json!(n), immediate_retries(3))?)
            .await
            .ctx("enqueue")?;
    }
    let short = reserve_one(&h.backend, &jobs, &owner("short")?, SHORT_TTL).await?;
    let long = reserve_one(&h.backend, &jobs, &owner("long")?, LONG_TTL).await?;
    let early = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        early.is_empty(),
        "requeue_expired before any expiry returned {early:?}"
    );
    h.time.pass(PAST_SHORT_TTL).await;
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        requeued == vec![short.job.id],
        "requeue_expired returned {requeued:?}"
    );
    let again = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        again.is_empty(),
        "a second requeue_expired returned {again:?}"
    );
    let job = h.backend.get(short.job.id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.history.len() == 1,
        "one expiry recorded as {:?}",
        job.history
    );
    let kept = h.backend.get(long.job.id).await.ctx("get")?.ctx("job")?;
    ensure!(
        kept.state == JobState::Running,
        "a live lease's job is {}",
        kept.state
    );
    h.backend
        .touch(&long.lease, LONG_TTL)
        .await
        .ctx("touch the live lease")?;
    Ok(())
}

async fn touch_extends<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    h.backend
        .enqueue(&job(&jobs, json!({}))?)
        .await
        .ctx("enqueue")?;
    let ttl = SHORT_TTL * 3;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, ttl).await?;
    h.time.pass(ttl * 2 / 3).await;
    let touched = h.backend.touch(&reserved.lease, ttl).await.ctx("touch")?;
    ensure!(
        touched.job == reserved.lease.job && touched.lease.token() == reserved.lease.lease.token(),
        "touch changed the lease from {:?} to {touched:?}",
        reserved.lease
    );
    ensure!(
        touched.lease.expires_at() > reserved.lease.lease.expires_at(),
        "touch did not move the expiry"
    );
    h.time.pass(ttl * 2 / 3).await;
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        requeued.is_empty(),
        "a touched job was requeued past its first ttl: {requeued:?}"
    );
    let done = h
        .backend
        .complete(&touched, json!("ok"))
        .await
        .ctx("complete")?;
    ensure!(done.state == JobState::Succeeded, "job is {}", done.state);
    Ok(())
}
