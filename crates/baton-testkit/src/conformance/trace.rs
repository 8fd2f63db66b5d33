//! Cases for the trace context a job carries: the W3C traceparent of the span that enqueued it.

use std::collections::BTreeMap;

use baton_core::{Backend, Job, JobFilter, JobId, JobState, Retry, TraceParent};
use serde_json::json;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, SHORT_TTL, ensure, immediate_retries, job_with_retry, owner,
    queue, reserve_one,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![case!(
        "a job keeps the trace parent it was enqueued with, alone or in a batch, through reserve, \
         get, list and every kind of retry, and a job enqueued without one has none",
        trace_parent_kept
    )]
}

/// The trace parent each job was enqueued with.
type Expected = BTreeMap<JobId, Option<TraceParent>>;

/// A sampled traceparent of one trace, told apart by its span id (16 hex digits).
fn trace_parent(span_id: &str) -> Result<TraceParent, String> {
    TraceParent::parse(&format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01"))
        .ctx("trace parent")
}

/// Checks that `job` carries the trace parent it was enqueued with, after `step`.
fn expect_trace_parent(expected: &Expected, job: &Job, step: &str) -> CaseResult {
    let want = expected.get(&job.id).ctx(&format!(
        "{step}: job {} was not enqueued by the case",
        job.id
    ))?;
    ensure!(
        job.trace_parent == *want,
        "{step}: job {} has trace parent {:?}, enqueued with {want:?}",
        job.id,
        job.trace_parent
    );
    Ok(())
}

async fn trace_parent_kept<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let policy = immediate_retries(3);
    let mut expected = Expected::new();
    for (payload, parent) in [
        ("single", Some(trace_parent("00f067aa0ba902b7")?)),
        ("single without", None),
    ] {
        let mut new = job_with_retry(&jobs, json!(payload), policy)?;
        if let Some(parent) = &parent {
            new = new.with_trace_parent(parent.clone());
        }
        let id = h.backend.enqueue(&new).await.ctx("enqueue")?;
        expected.insert(id, parent);
    }
    let batch_parents = [
        Some(trace_parent("00f067aa0ba902b8")?),
        None,
        Some(trace_parent("00f067aa0ba902b9")?),
    ];
    let mut batch = Vec::new();
    for (n, parent) in batch_parents.iter().enumerate() {
        let new = job_with_retry(&jobs, json!({ "batch": n }), policy)?;
        batch.push(match parent {
            Some(parent) => new.with_trace_parent(parent.clone()),
            None => new,
        });
    }
    let ids = h.backend.enqueue_batch(&batch).await.ctx("enqueue_batch")?;
    ensure!(
        ids.len() == batch.len(),
        "enqueue_batch of {} jobs returned {ids:?}",
        batch.len()
    );
    expected.extend(ids.into_iter().zip(batch_parents));
    let total = expected.len();

    for &id in expected.keys() {
        let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
        expect_trace_parent(&expected, &stored, "get after enqueue")?;
    }
    let page = h
        .backend
        .list(&JobFilter {
            queue: Some(jobs.clone()),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .ctx("list")?;
    ensure!(
        page.jobs.len() == total,
        "list returned {} jobs, expected {total}",
        page.jobs.len()
    );
    for listed in &page.jobs {
        expect_trace_parent(&expected, listed, "list")?;
    }
    let newest = h.backend.last(&jobs).await.ctx("last")?.ctx("last job")?;
    expect_trace_parent(&expected, &newest, "last")?;

    // Reserved, then failed and retried by the policy.
    let worker = owner("worker")?;
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &worker, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    ensure!(
        reserved.len() == total,
        "reserve returned {} jobs, expected {total}",
        reserved.len()
    );
    for r in &reserved {
        expect_trace_parent(&expected, &r.job, "reserve")?;
        let failed = h
            .backend
            .fail(&r.lease, "boom", Retry::ByPolicy)
            .await
            .ctx("fail")?;
        ensure!(
            failed.state == JobState::Pending,
            "a job failed with attempts left is {}",
            failed.state
        );
        expect_trace_parent(&expected, &failed, "fail with a retry")?;
    }

    // Reserved again, one completed while the rest are reserved under leases left to expire.
    let first = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    expect_trace_parent(&expected, &first.job, "reserve after a retry")?;
    let (completed, rest) = h
        .backend
        .complete_and_reserve(
            &first.lease,
            json!("done"),
            std::slice::from_ref(&jobs),
            &worker,
            SHORT_TTL,
            10,
        )
        .await
        .ctx("complete_and_reserve")?;
    let completed = completed.ctx("complete_and_reserve's completion")?;
    expect_trace_parent(&expected, &completed, "complete_and_reserve's completion")?;
    ensure!(
        rest.len() == total - 1,
        "complete_and_reserve reserved {} jobs, expected {}",
        rest.len(),
        total - 1
    );
    for r in &rest {
        expect_trace_parent(&expected, &r.job, "complete_and_reserve's reservation")?;
    }
    h.time.pass(PAST_SHORT_TTL).await;
    h.backend.requeue_expired().await.ctx("requeue_expired")?;
    for r in &rest {
        let requeued = h.backend.get(r.job.id).await.ctx("get")?.ctx("job")?;
        ensure!(
            requeued.state == JobState::Pending,
            "a job whose lease expired with attempts left is {}",
            requeued.state
        );
        expect_trace_parent(&expected, &requeued, "get after requeue_expired")?;
    }

    // Reserved a third time, failed for good, then retried by hand.
    let last_round = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &worker, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    ensure!(
        last_round.len() == total - 1,
        "reserve returned {} jobs, expected {}",
        last_round.len(),
        total - 1
    );
    for r in &last_round {
        expect_trace_parent(&expected, &r.job, "reserve after requeue_expired")?;
        let failed = h
            .backend
            .fail(&r.lease, "fatal", Retry::Never)
            .await
            .ctx("fail")?;
        ensure!(
            failed.state == JobState::Failed,
            "a job failed for good is {}",
            failed.state
        );
        expect_trace_parent(&expected, &failed, "fail for good")?;
        let retried = h.backend.retry(r.job.id).await.ctx("retry")?;
        ensure!(
            retried.state == JobState::Pending,
            "a retried job is {}",
            retried.state
        );
        expect_trace_parent(&expected, &retried, "retry")?;
    }
    for &id in expected.keys() {
        let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
        expect_trace_parent(&expected, &stored, "get at the end")?;
    }
    Ok(())
}
