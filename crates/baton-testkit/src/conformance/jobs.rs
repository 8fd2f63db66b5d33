//! Cases for the end of a job's life: cancellation, purging, and that every job ends in exactly
//! one terminal state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{AttemptOutcome, Backend, Error, JobId, JobState, Retry};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, Rng, SHORT_TTL, ensure, expect_conflict,
    expect_last_outcome, expect_lease_lost, expect_not_found, expect_nothing_due,
    immediate_retries, job, job_with_retry, join_all, owner, queue, reserve_one,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "canceling a pending job means it is never reserved",
            cancel_pending
        ),
        case!(
            "canceling a running job revokes its lease and no retry follows",
            cancel_running
        ),
        case!("canceling a finished job is a conflict", cancel_finished),
        case!("canceling an unknown job is not found", cancel_unknown),
        case!(
            "canceling a job twice returns it canceled both times",
            cancel_twice
        ),
        case!(
            "a failed job retried runs again, keeping its history, with one more attempt",
            retry_failed
        ),
        case!(
            "a canceled job retried runs again; a pending one is returned as it is",
            retry_canceled_and_pending
        ),
        case!(
            "retrying a succeeded job is a conflict and an unknown one not found",
            retry_refused
        ),
        case!(
            "purge_finished deletes old terminal jobs and keeps newer and unfinished ones",
            purge_finished
        ),
        case!(
            "every job ends in exactly one terminal state under concurrent workers",
            exactly_one_terminal_state
        ),
    ]
}

async fn cancel_pending<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let now_id = h
        .backend
        .enqueue(&job(&jobs, json!("now"))?)
        .await
        .ctx("enqueue")?;
    let later_id = h
        .backend
        .enqueue(&job(&jobs, json!("later"))?.with_delay(SHORT_TTL))
        .await
        .ctx("enqueue")?;
    for id in [now_id, later_id] {
        let job = h.backend.cancel(id).await.ctx("cancel")?;
        ensure!(
            job.id == id && job.state == JobState::Canceled && job.finished_at.is_some(),
            "canceled pending job returned as {job:?}"
        );
        ensure!(
            job.history.is_empty() && job.attempts == 0,
            "a never-run job has history {:?}",
            job.history
        );
    }
    expect_nothing_due(&h.backend, &jobs, "after canceling").await?;
    h.time.pass(PAST_SHORT_TTL).await;
    expect_nothing_due(&h.backend, &jobs, "after the canceled delayed job's time").await?;
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.canceled == 2 && counts.total() == 2,
        "counts: {counts:?}"
    );
    Ok(())
}

async fn cancel_running<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(5))?)
        .await
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, SHORT_TTL).await?;
    let job = h.backend.cancel(id).await.ctx("cancel")?;
    ensure!(
        job.state == JobState::Canceled,
        "a canceled running job is {}",
        job.state
    );
    ensure!(
        job.finished_at.is_some() && job.lease.is_none(),
        "canceled job: {job:?}"
    );
    expect_last_outcome(&job, &AttemptOutcome::Canceled)?;
    expect_lease_lost(
        h.backend.complete(&reserved.lease, json!("too late")).await,
        "complete a canceled job",
    )?;
    expect_lease_lost(
        h.backend
            .fail(&reserved.lease, "too late", Retry::ByPolicy)
            .await,
        "fail a canceled job",
    )?;
    expect_lease_lost(
        h.backend.touch(&reserved.lease, LONG_TTL).await,
        "touch a canceled job",
    )?;
    expect_nothing_due(&h.backend, &jobs, "after canceling the running job").await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        !requeued.contains(&id),
        "requeue_expired touched the canceled job"
    );
    expect_nothing_due(&h.backend, &jobs, "after the canceled job's lease ran out").await?;
    let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        stored.state == JobState::Canceled
            && stored.attempts == 1
            && stored.history.len() == 1
            && stored.result.is_none(),
        "canceled job stored as {stored:?}"
    );
    Ok(())
}

async fn cancel_finished<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    for n in 0..2 {
        h.backend
            .enqueue(&job(&jobs, json!(n))?)
            .await
            .ctx("enqueue")?;
    }
    let succeeded = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .complete(&succeeded.lease, json!("done"))
        .await
        .ctx("complete")?;
    let failed = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .fail(&failed.lease, "broken", Retry::Never)
        .await
        .ctx("fail")?;
    for (reserved, state) in [
        (&succeeded, JobState::Succeeded),
        (&failed, JobState::Failed),
    ] {
        let id = reserved.job.id;
        expect_conflict(h.backend.cancel(id).await, &format!("cancel a {state} job"))?;
        let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
        ensure!(
            stored.state == state,
            "a refused cancel changed the job from {state} to {}",
            stored.state
        );
    }
    Ok(())
}

async fn retry_failed<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    // One attempt allowed: the failure below uses it up.
    let id = h
        .backend
        .enqueue(&job_with_retry(
            &jobs,
            json!("flaky"),
            immediate_retries(1),
        )?)
        .await
        .ctx("enqueue")?;
    let first = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let failed = h
        .backend
        .fail(&first.lease, "first try", Retry::ByPolicy)
        .await
        .ctx("fail")?;
    ensure!(failed.state == JobState::Failed, "failed as {failed:?}");

    let retried = h.backend.retry(id).await.ctx("retry")?;
    ensure!(
        retried.state == JobState::Pending
            && retried.finished_at.is_none()
            && retried.lease.is_none()
            && retried.attempts == 1
            && retried.history.len() == 1,
        "a retried job is {retried:?}"
    );
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.pending == 1 && counts.failed == 0 && counts.total() == 1,
        "counts after retry: {counts:?}"
    );
    // Due at once, with its payload, its earlier attempt kept and a fresh lease token.
    let second = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        second.job.id == id
            && second.job.attempts == 2
            && second.job.history.len() == 2
            && second.job.payload == json!("flaky")
            && second.lease.lease.token() > first.lease.lease.token(),
        "the retried job was reserved as {:?}",
        second.job
    );
    expect_lease_lost(
        h.backend.complete(&first.lease, json!("stale")).await,
        "complete with the first attempt's lease",
    )?;
    // The policy's attempts are used up: failing again fails the job for good.
    let again = h
        .backend
        .fail(&second.lease, "second try", Retry::ByPolicy)
        .await
        .ctx("fail again")?;
    ensure!(again.state == JobState::Failed, "failed again as {again:?}");
    let retried = h.backend.retry(id).await.ctx("retry again")?;
    let third = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(third.job.id == retried.id, "reserved {:?}", third.job);
    let done = h
        .backend
        .complete(&third.lease, json!("at last"))
        .await
        .ctx("complete")?;
    ensure!(
        done.state == JobState::Succeeded && done.attempts == 3 && done.history.len() == 3,
        "completed as {done:?}"
    );
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.succeeded == 1 && counts.total() == 1,
        "counts at the end: {counts:?}"
    );
    Ok(())
}

async fn retry_canceled_and_pending<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let canceled = h
        .backend
        .enqueue(&job(&jobs, json!("c"))?)
        .await
        .ctx("enqueue")?;
    h.backend.cancel(canceled).await.ctx("cancel")?;
    expect_nothing_due(&h.backend, &jobs, "after canceling").await?;
    let retried = h.backend.retry(canceled).await.ctx("retry")?;
    ensure!(
        retried.state == JobState::Pending && retried.finished_at.is_none(),
        "a retried canceled job is {retried:?}"
    );
    let pending = h
        .backend
        .enqueue(&job(&jobs, json!("p"))?)
        .await
        .ctx("enqueue")?;
    let before = h.backend.get(pending).await.ctx("get")?.ctx("job")?;
    let same = h.backend.retry(pending).await.ctx("retry a pending job")?;
    ensure!(
        same == before,
        "retrying a pending job changed it: {same:?}"
    );
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    ensure!(
        reserved.job.id == canceled,
        "reserved {} before the retried job",
        reserved.job.id
    );
    let running = h.backend.retry(canceled).await.ctx("retry a running job")?;
    ensure!(
        running.state == JobState::Running && running.lease == reserved.job.lease,
        "retrying a running job changed it: {running:?}"
    );
    Ok(())
}

async fn retry_refused<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!(1))?)
        .await
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    h.backend
        .complete(&reserved.lease, json!("done"))
        .await
        .ctx("complete")?;
    expect_conflict(h.backend.retry(id).await, "retry a succeeded job")?;
    let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        stored.state == JobState::Succeeded,
        "a refused retry changed the job to {}",
        stored.state
    );
    expect_not_found(
        h.backend.retry(JobId::new(id.get() + 1000)).await,
        "retry an unknown job",
    )?;
    Ok(())
}

async fn cancel_unknown<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!(1))?)
        .await
        .ctx("enqueue")?;
    expect_not_found(
        h.backend.cancel(JobId::new(id.get() + 1000)).await,
        "cancel an unknown job",
    )?;
    Ok(())
}

async fn cancel_twice<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let pending = h
        .backend
        .enqueue(&job(&jobs, json!("p"))?)
        .await
        .ctx("enqueue")?;
    let running = h
        .backend
        .enqueue(&job(&jobs, json!("r"))?)
        .await
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    ensure!(
        reserved.job.id == pending,
        "reserved {} first",
        reserved.job.id
    );
    for id in [pending, running] {
        let first = h.backend.cancel(id).await.ctx("cancel")?;
        let second = h.backend.cancel(id).await.ctx("cancel again")?;
        ensure!(
            second.state == JobState::Canceled,
            "a second cancel left the job {}",
            second.state
        );
        ensure!(
            second.finished_at == first.finished_at && second.history == first.history,
            "a second cancel changed the job: {first:?} then {second:?}"
        );
    }
    Ok(())
}

async fn purge_finished<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            h.backend
                .enqueue(&job(&jobs, json!(n))?)
                .await
                .ctx("enqueue")?,
        );
    }
    let old_done = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .complete(&old_done.lease, json!(0))
        .await
        .ctx("complete")?;
    h.backend.cancel(ids[1]).await.ctx("cancel")?;
    h.time.pass(Duration::from_millis(800)).await;
    let new_done = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        new_done.job.id == ids[2],
        "reserved {} instead of {}",
        new_done.job.id,
        ids[2]
    );
    h.backend
        .complete(&new_done.lease, json!(2))
        .await
        .ctx("complete")?;
    let new_failed = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .fail(&new_failed.lease, "no", Retry::Never)
        .await
        .ctx("fail")?;
    let running = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let purged = h
        .backend
        .purge_finished(Duration::from_millis(400))
        .await
        .ctx("purge_finished")?;
    ensure!(
        purged == 2,
        "purge_finished removed {purged} jobs, expected the 2 old terminal ones"
    );
    for (index, id) in ids.iter().enumerate() {
        let exists = h.backend.get(*id).await.ctx("get")?.is_some();
        let expected = index >= 2;
        ensure!(
            exists == expected,
            "job {id} (number {index}) {} after purging",
            if exists { "still exists" } else { "is gone" }
        );
    }
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.succeeded == 1
            && counts.canceled == 0
            && counts.failed == 1
            && counts.running == 1
            && counts.pending == 1,
        "counts after purging: {counts:?}"
    );
    h.backend
        .complete(&running.lease, json!(4))
        .await
        .ctx("complete after purge")?;
    Ok(())
}

async fn exactly_one_terminal_state<B: Backend + Clone + 'static>(h: Harness<B>) -> CaseResult {
    const JOBS: usize = 200;
    let jobs = queue("jobs")?;
    let batch = (0..JOBS)
        .map(|n| job_with_retry(&jobs, json!({ "n": n }), immediate_retries(3)))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = h.backend.enqueue_batch(&batch).await.ctx("enqueue_batch")?;
    ensure!(
        ids.len() == JOBS,
        "enqueue_batch returned {} ids",
        ids.len()
    );
    let completed = Arc::new(Mutex::new(BTreeSet::<JobId>::new()));
    let mut tasks = JoinSet::new();
    for task in 0..4_u64 {
        let backend = h.backend.clone();
        let jobs = jobs.clone();
        let completed = completed.clone();
        let me = owner(&format!("worker-{task}"))?;
        tasks.spawn(async move {
            let mut rng = Rng::new(0x7e51_0000 + task);
            for _round in 0..5_000 {
                let got = backend
                    .reserve(std::slice::from_ref(&jobs), &me, LONG_TTL, 4)
                    .await
                    .ctx("reserve")?;
                if got.is_empty() {
                    let counts = backend.counts(&jobs).await.ctx("counts")?;
                    if counts.pending == 0 && counts.running == 0 {
                        return Ok(());
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                for reserved in got {
                    let id = reserved.job.id;
                    match rng.below(10) {
                        0..6 => match backend.complete(&reserved.lease, json!(id.get())).await {
                            Ok(job) => {
                                ensure!(
                                    job.state == JobState::Succeeded,
                                    "complete left job {id} {}",
                                    job.state
                                );
                                ensure!(
                                    completed.lock().await.insert(id),
                                    "job {id} completed twice"
                                );
                            }
                            Err(Error::LeaseLost { .. }) => {}
                            Err(other) => return Err(format!("complete job {id}: {other}")),
                        },
                        6..9 => match backend
                            .fail(&reserved.lease, "flaky", Retry::ByPolicy)
                            .await
                        {
                            Ok(_) | Err(Error::LeaseLost { .. }) => {}
                            Err(other) => return Err(format!("fail job {id}: {other}")),
                        },
                        _ => {
                            let job = backend.cancel(id).await.ctx("cancel")?;
                            ensure!(
                                job.state == JobState::Canceled,
                                "cancel left job {id} {}",
                                job.state
                            );
                        }
                    }
                }
            }
            Err(format!("{me} was still finding work after 5000 rounds"))
        });
    }
    {
        let backend = h.backend.clone();
        let ids = ids.clone();
        tasks.spawn(async move {
            let mut rng = Rng::new(0x00ca_9ce1);
            for _ in 0..30 {
                let id = ids[rng.below(ids.len())];
                match backend.cancel(id).await {
                    Ok(job) => ensure!(
                        job.state == JobState::Canceled,
                        "cancel left job {id} {}",
                        job.state
                    ),
                    Err(Error::Conflict(_)) => {}
                    Err(other) => return Err(format!("cancel job {id}: {other}")),
                }
                tokio::task::yield_now().await;
            }
            Ok(())
        });
    }
    join_all(tasks).await?;
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.pending == 0 && counts.running == 0 && counts.total() == JOBS as u64,
        "after every worker stopped, counts are {counts:?}"
    );
    let completed = completed.lock().await.clone();
    ensure!(
        counts.succeeded == completed.len() as u64,
        "{} jobs counted succeeded, {} completions accepted",
        counts.succeeded,
        completed.len()
    );
    for id in &ids {
        let job = h
            .backend
            .get(*id)
            .await
            .ctx("get")?
            .ctx(&format!("job {id}"))?;
        ensure!(
            job.state.is_terminal() && job.finished_at.is_some(),
            "job {id} ended as {job:?}"
        );
        ensure!(
            (job.state == JobState::Succeeded) == completed.contains(id),
            "job {id} is {} but its completion was {}accepted",
            job.state,
            if completed.contains(id) { "" } else { "not " }
        );
        ensure!(
            job.history.len() == job.attempts as usize && job.attempts <= 3,
            "job {id} has {} attempts and history {:?}",
            job.attempts,
            job.history
        );
        ensure!(
            job.history
                .iter()
                .all(|attempt| attempt.outcome.is_some() && attempt.finished_at.is_some()),
            "job {id} ended with an unfinished attempt: {:?}",
            job.history
        );
    }
    Ok(())
}
