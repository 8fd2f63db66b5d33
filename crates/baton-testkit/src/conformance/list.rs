//! Cases for listing jobs a page at a time.

use std::collections::BTreeSet;

use baton_core::{Backend, Error, JobFilter, JobId, JobState, MAX_LIST, Retry};
use serde_json::json;

use super::support::{Context, LONG_TTL, ensure, job, owner, queue, reserve_one};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "listing pages through every matching job newest first, by queue and by state",
            list_pages
        ),
        case!(
            "a list limit of 0 or above the maximum is refused",
            list_limits
        ),
    ]
}

/// Every job matching `filter`, page by page, with pages of `limit`; fails on a page that
/// repeats or reorders a job, or after more pages than jobs could fill.
async fn walk<B: Backend>(
    backend: &B,
    mut filter: JobFilter,
    limit: usize,
) -> Result<Vec<(JobId, String, JobState)>, String> {
    filter.limit = limit;
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = backend.list(&filter).await.ctx("list")?;
        ensure!(
            page.jobs.len() <= limit,
            "a page of {} jobs",
            page.jobs.len()
        );
        for job in &page.jobs {
            if let Some((last, _, _)) = seen.last() {
                ensure!(job.id < *last, "job {} after {last}", job.id);
            }
            seen.push((job.id, job.queue.to_string(), job.state));
        }
        match page.next {
            Some(next) => {
                ensure!(
                    page.jobs.last().is_none_or(|job| next <= job.id),
                    "next {next} is above the page's last job"
                );
                filter.before = Some(next);
            }
            None => return Ok(seen),
        }
    }
    Err("the pages never ended".to_owned())
}

async fn list_pages<B: Backend>(h: Harness<B>) -> CaseResult {
    let (mail, reports) = (queue("mail")?, queue("reports")?);
    let mut all = Vec::new();
    for n in 0..5 {
        for q in [&mail, &reports] {
            let id = h.backend.enqueue(&job(q, json!(n))?).await.ctx("enqueue")?;
            all.push((id, q.to_string()));
        }
    }
    let worker = owner("worker")?;
    let done = reserve_one(&h.backend, &mail, &worker, LONG_TTL).await?;
    h.backend
        .complete(&done.lease, json!("ok"))
        .await
        .ctx("complete")?;
    let failed = reserve_one(&h.backend, &mail, &worker, LONG_TTL).await?;
    h.backend
        .fail(&failed.lease, "no", Retry::Never)
        .await
        .ctx("fail")?;
    let canceled = all[1].0;
    h.backend.cancel(canceled).await.ctx("cancel")?;

    all.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    let everything = walk(&h.backend, JobFilter::default(), 3).await?;
    let listed: Vec<(JobId, String)> = everything
        .iter()
        .map(|(id, q, _)| (*id, q.clone()))
        .collect();
    ensure!(listed == all, "listed {listed:?}, enqueued {all:?}");

    let by_queue = JobFilter {
        queue: Some(reports.clone()),
        ..JobFilter::default()
    };
    let reports_jobs = walk(&h.backend, by_queue, 2).await?;
    let expected: Vec<JobId> = all
        .iter()
        .filter(|(_, q)| q == reports.as_str())
        .map(|(id, _)| *id)
        .collect();
    let got: Vec<JobId> = reports_jobs.iter().map(|(id, _, _)| *id).collect();
    ensure!(
        got == expected,
        "reports listed as {got:?}, expected {expected:?}"
    );

    for (state, id) in [
        (JobState::Succeeded, done.job.id),
        (JobState::Failed, failed.job.id),
        (JobState::Canceled, canceled),
    ] {
        let filter = JobFilter {
            state: Some(state),
            ..JobFilter::default()
        };
        let got: Vec<JobId> = walk(&h.backend, filter, 1)
            .await?
            .iter()
            .map(|(id, _, _)| *id)
            .collect();
        ensure!(
            got == [id],
            "{state} jobs listed as {got:?}, expected [{id}]"
        );
    }
    let pending = JobFilter {
        queue: Some(mail.clone()),
        state: Some(JobState::Pending),
        ..JobFilter::default()
    };
    let got: BTreeSet<JobId> = walk(&h.backend, pending, 500)
        .await?
        .iter()
        .map(|(id, _, _)| *id)
        .collect();
    ensure!(got.len() == 3, "pending mail jobs: {got:?}");
    Ok(())
}

async fn list_limits<B: Backend>(h: Harness<B>) -> CaseResult {
    for limit in [0, MAX_LIST + 1] {
        let filter = JobFilter {
            limit,
            ..JobFilter::default()
        };
        match h.backend.list(&filter).await {
            Err(Error::InvalidInput(_)) => {}
            other => return Err(format!("list with limit {limit}: {other:?}")),
        }
    }
    Ok(())
}
