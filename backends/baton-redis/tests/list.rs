//! A list call looks at a bounded number of jobs however sparse its matches are, and the pages
//! still cover every match.

#![allow(clippy::unwrap_used)]

mod support;

use baton_core::{JobFilter, JobState, NewJob, Queue, QueueName};
use baton_redis::RedisBackend;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_filter_pages_through_every_match_in_bounded_steps() {
    let backend = RedisBackend::connect(support::config("l")).await.unwrap();
    let (rare, common) = (
        QueueName::new("rare").unwrap(),
        QueueName::new("common").unwrap(),
    );
    let first = backend
        .enqueue(&NewJob::new(rare.clone(), json!("oldest")).unwrap())
        .await
        .unwrap();
    let filler: Vec<NewJob> = (0..2500)
        .map(|n| NewJob::new(common.clone(), json!(n)).unwrap())
        .collect();
    backend.enqueue_batch(&filler).await.unwrap();
    let last = backend
        .enqueue(&NewJob::new(rare.clone(), json!("newest")).unwrap())
        .await
        .unwrap();
    let canceled = backend.cancel(first).await.unwrap();
    assert_eq!(canceled.state, JobState::Canceled);

    // Canceled jobs of any queue: the one match is 2,500 jobs below the newest.
    let mut filter = JobFilter {
        state: Some(JobState::Canceled),
        limit: 10,
        ..JobFilter::default()
    };
    let (mut found, mut pages) = (Vec::new(), 0);
    loop {
        let page = backend.list(&filter).await.unwrap();
        pages += 1;
        found.extend(page.jobs.iter().map(|job| job.id));
        match page.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
        assert!(pages < 100, "the pages never ended");
    }
    assert_eq!(found, [first]);
    assert!(pages > 1, "one call looked at all 2,502 jobs");

    // By queue, the queue's own index skips the other queue's jobs.
    let page = backend
        .list(&JobFilter {
            queue: Some(rare),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids, [last, first]);
    assert_eq!(page.next, None);
}
