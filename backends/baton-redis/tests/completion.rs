//! A completion by the process that reserved the job answers from its copy of the job; one by
//! another process reads the job back. Either way the finished job it returns is the job as
//! stored, attempts and history included.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{JobState, NewJob, Owner, Queue, QueueName, Retry, RetryPolicy};
use baton_redis::RedisBackend;
use serde_json::json;

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_job_is_returned_as_stored_by_the_reserving_process_and_by_another() {
    let config = support::config("c");
    let here = RedisBackend::connect(config.clone()).await.unwrap();
    let elsewhere = RedisBackend::connect(config).await.unwrap();
    let queue = QueueName::new("reports").unwrap();
    let owner = Owner::new("worker-1").unwrap();
    let retry = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let new = |n: i32| {
        NewJob::new(queue.clone(), json!({"report": n}))
            .unwrap()
            .with_retry(retry)
            .unwrap()
    };
    let first = here.enqueue(&new(1)).await.unwrap();
    let second = here.enqueue(&new(2)).await.unwrap();

    // The first job fails once, then succeeds: its second attempt and the first in its history.
    let reserved = here
        .reserve(std::slice::from_ref(&queue), &owner, TTL, 1)
        .await
        .unwrap();
    assert_eq!(reserved[0].job.id, first);
    here.fail(&reserved[0].lease, "flaky", Retry::After(Duration::ZERO))
        .await
        .unwrap();
    let reserved = here
        .reserve(std::slice::from_ref(&queue), &owner, TTL, 2)
        .await
        .unwrap();
    let lease = |id| {
        reserved
            .iter()
            .find(|r| r.job.id == id)
            .unwrap()
            .lease
            .clone()
    };

    let done = here
        .complete(&lease(first), json!({"pages": 3}))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.history.len(), 2, "{done:?}");
    assert_eq!(Some(&done), here.get(first).await.unwrap().as_ref());

    // Another process never held the second job: it reads it back.
    let done = elsewhere
        .complete(&lease(second), json!("ok"))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(Some(&done), here.get(second).await.unwrap().as_ref());

    // A second completion of a finished job is refused, from either process.
    assert!(here.complete(&lease(first), json!(1)).await.is_err());
    assert!(here.complete(&lease(second), json!(1)).await.is_err());
}
