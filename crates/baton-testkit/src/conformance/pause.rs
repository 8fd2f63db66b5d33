//! Cases for pausing and resuming queues.

use baton_core::Backend;
use serde_json::json;

use super::dispatch::next_wake_of;
use super::support::{Context, LONG_TTL, ensure, expect_nothing_due, job, owner, queue};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "a paused queue hands out no job until resumed, and enqueueing goes on",
            paused_queue_waits
        ),
        case!(
            "reserving from several queues skips a paused one",
            paused_among_several
        ),
        case!(
            "pausing twice and resuming a running queue change nothing",
            pause_idempotent
        ),
    ]
}

async fn paused_queue_waits<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    let first = h
        .backend
        .enqueue(&job(&jobs, json!(1))?)
        .await
        .ctx("enqueue")?;
    h.backend.pause(&jobs).await.ctx("pause")?;
    let paused = h.backend.paused().await.ctx("paused")?;
    ensure!(paused == [jobs.clone()], "paused queues: {paused:?}");
    expect_nothing_due(&h.backend, &jobs, "while paused").await?;
    let second = h
        .backend
        .enqueue(&job(&jobs, json!(2))?)
        .await
        .ctx("enqueue while paused")?;
    expect_nothing_due(&h.backend, &jobs, "after enqueueing into a paused queue").await?;
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(counts.pending == 2, "counts while paused: {counts:?}");

    let mut wakeups = h
        .backend
        .wakeups(std::slice::from_ref(&jobs))
        .await
        .ctx("wakeups")?;
    h.backend.resume(&jobs).await.ctx("resume")?;
    next_wake_of(&mut wakeups, &jobs, "wake on resume").await?;
    let paused = h.backend.paused().await.ctx("paused")?;
    ensure!(paused.is_empty(), "paused after resume: {paused:?}");
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &worker, LONG_TTL, 10)
        .await
        .ctx("reserve after resume")?;
    let ids: Vec<_> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(ids == [first, second], "reserved after resume: {ids:?}");
    Ok(())
}

async fn paused_among_several<B: Backend>(h: Harness<B>) -> CaseResult {
    let (paused, open) = (queue("paused")?, queue("open")?);
    let worker = owner("worker")?;
    let held = h
        .backend
        .enqueue(&job(&paused, json!("held"))?.with_priority(baton_core::Priority(9)))
        .await
        .ctx("enqueue")?;
    let free = h
        .backend
        .enqueue(&job(&open, json!("free"))?)
        .await
        .ctx("enqueue")?;
    h.backend.pause(&paused).await.ctx("pause")?;
    let both = [paused.clone(), open.clone()];
    let reserved = h
        .backend
        .reserve(&both, &worker, LONG_TTL, 5)
        .await
        .ctx("reserve")?;
    let ids: Vec<_> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(
        ids == [free],
        "reserved from a paused and an open queue: {ids:?}"
    );
    h.backend.resume(&paused).await.ctx("resume")?;
    let reserved = h
        .backend
        .reserve(&both, &worker, LONG_TTL, 5)
        .await
        .ctx("reserve after resume")?;
    let ids: Vec<_> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(ids == [held], "reserved after resume: {ids:?}");
    Ok(())
}

async fn pause_idempotent<B: Backend>(h: Harness<B>) -> CaseResult {
    let (a, b) = (queue("a")?, queue("b")?);
    h.backend.resume(&a).await.ctx("resume a running queue")?;
    for _ in 0..2 {
        h.backend.pause(&b).await.ctx("pause b")?;
        h.backend.pause(&a).await.ctx("pause a")?;
    }
    let paused = h.backend.paused().await.ctx("paused")?;
    ensure!(
        paused == [a.clone(), b.clone()],
        "paused queues: {paused:?}"
    );
    for _ in 0..2 {
        h.backend.resume(&a).await.ctx("resume a")?;
    }
    let paused = h.backend.paused().await.ctx("paused")?;
    ensure!(paused == [b.clone()], "paused queues: {paused:?}");
    h.backend
        .enqueue(&job(&a, json!("runs"))?)
        .await
        .ctx("enqueue")?;
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&a), &owner("worker")?, LONG_TTL, 1)
        .await
        .ctx("reserve from the resumed queue")?;
    ensure!(reserved.len() == 1, "reserved {} jobs", reserved.len());
    Ok(())
}
