//! The subscriber reconnects and subscribes again after losing its connection: wake-ups and job
//! events from another process reach this one again afterwards.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use baton_core::{Dispatch, JobState, NewJob, Owner, Queue, QueueName};
use baton_redis::RedisBackend;
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_subscribes_again_after_its_connection_is_killed() {
    let config = support::config("k");
    let prefix = config.prefix.to_string();
    let here = RedisBackend::connect(config.clone()).await.unwrap();
    let elsewhere = RedisBackend::connect(config).await.unwrap();
    let queue = QueueName::new("reconnect").unwrap();

    let mut wakes = here.wakeups(std::slice::from_ref(&queue)).await.unwrap();
    let id = elsewhere
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!(1)).unwrap())
        .await
        .unwrap();
    let mut events = here.subscribe(id).await.unwrap();
    let woken = tokio::time::timeout(WAIT, wakes.next()).await;
    assert_eq!(
        woken.unwrap(),
        Some(queue.clone()),
        "the enqueue woke the other process"
    );

    let client = redis::Client::open(support::url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "no subscriber connection was killed");

    // Once back, the subscriber wakes every queue (wakes may have been lost meanwhile): this
    // wake says it has subscribed again.
    let woken = tokio::time::timeout(WAIT, wakes.next()).await;
    assert_eq!(
        woken.unwrap(),
        Some(queue.clone()),
        "no wake after reconnecting"
    );

    elsewhere.wake(&queue).await.unwrap();
    let woken = tokio::time::timeout(WAIT, wakes.next()).await;
    assert_eq!(
        woken.unwrap(),
        Some(queue.clone()),
        "a wake from elsewhere was lost"
    );

    let owner = Owner::new("worker").unwrap();
    let reserved = elsewhere
        .reserve(std::slice::from_ref(&queue), &owner, WAIT, 1)
        .await
        .unwrap();
    elsewhere
        .complete(&reserved[0].lease, serde_json::json!("ok"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(WAIT, events.next()).await {
        seen.push(event.state);
    }
    assert_eq!(seen, [JobState::Running, JobState::Succeeded]);
    support::delete_keys(&prefix).await;
}
