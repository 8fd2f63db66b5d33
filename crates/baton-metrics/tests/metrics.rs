//! The metrics a [`Metered`] memory backend renders after a known sequence of calls.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    Acquire, Error, Lock, LockName, LockRequest, NewJob, Owner, Queue, QueueName, Retry,
};
use baton_memory::MemoryBackend;
use baton_metrics::{MAX_QUEUES, Metered, Metrics};
use serde_json::json;

const TTL: Duration = Duration::from_secs(30);

fn metered() -> Metered<MemoryBackend> {
    Metered::new(Arc::new(MemoryBackend::new()), Arc::new(Metrics::new()))
}

/// The value of the sample `name` (with its labels, as rendered), or `None` if absent.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test]
async fn jobs_calls_and_queue_depths_are_counted_by_queue_and_outcome() {
    let backend = metered();
    let mail = QueueName::new("mail").unwrap();
    let job = || NewJob::new(mail.clone(), json!({})).unwrap();
    backend.enqueue_batch(&[job(), job()]).await.unwrap();
    let third = backend.enqueue(&job()).await.unwrap();
    let owner = Owner::new("worker-1").unwrap();
    let reserved = backend
        .reserve(std::slice::from_ref(&mail), &owner, TTL, 2)
        .await
        .unwrap();
    assert_eq!(reserved.len(), 2);
    backend
        .complete(&reserved[0].lease, json!("ok"))
        .await
        .unwrap();
    backend
        .fail(&reserved[1].lease, "boom", Retry::Never)
        .await
        .unwrap();
    backend.cancel(third).await.unwrap();
    // A stale lease: the call fails and is counted as an error.
    let stale = backend.complete(&reserved[0].lease, json!("again")).await;
    assert!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");

    let text = backend.metrics().render(backend.inner().as_ref()).await;
    let expect = |name: &str, value: f64| {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    };
    expect(r#"baton_jobs_enqueued_total{queue="mail"}"#, 3.0);
    expect(
        r#"baton_jobs_finished_total{queue="mail",outcome="succeeded"}"#,
        1.0,
    );
    expect(
        r#"baton_jobs_finished_total{queue="mail",outcome="failed"}"#,
        1.0,
    );
    expect(
        r#"baton_jobs_finished_total{queue="mail",outcome="canceled"}"#,
        1.0,
    );
    expect(r#"baton_jobs{queue="mail",state="succeeded"}"#, 1.0);
    expect(r#"baton_jobs{queue="mail",state="failed"}"#, 1.0);
    expect(r#"baton_jobs{queue="mail",state="canceled"}"#, 1.0);
    expect(r#"baton_jobs{queue="mail",state="pending"}"#, 0.0);
    expect(
        r#"baton_backend_calls_total{call="enqueue",outcome="ok"}"#,
        1.0,
    );
    expect(
        r#"baton_backend_calls_total{call="complete",outcome="ok"}"#,
        1.0,
    );
    expect(
        r#"baton_backend_calls_total{call="complete",outcome="error"}"#,
        1.0,
    );
    expect(r#"baton_backend_call_seconds_count{call="reserve"}"#, 1.0);
    // Both ended attempts ran for a measured time, counted once each.
    expect(r#"baton_job_run_seconds_count{queue="mail"}"#, 2.0);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[tokio::test]
async fn lock_acquisitions_are_counted_granted_or_busy() {
    let backend = metered();
    let name = LockName::new("app:1").unwrap();
    let request =
        |owner: &str| LockRequest::new([name.clone()], Owner::new(owner).unwrap(), TTL).unwrap();
    let granted = backend.acquire(&request("a")).await.unwrap();
    assert!(matches!(granted, Acquire::Granted(_)));
    let busy = backend.acquire(&request("b")).await.unwrap();
    assert!(matches!(busy, Acquire::Busy(_)));
    let text = backend.metrics().render(backend.inner().as_ref()).await;
    assert_eq!(
        sample(&text, r#"baton_lock_acquires_total{outcome="granted"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"baton_lock_acquires_total{outcome="busy"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn queues_past_the_limit_share_one_label() {
    let backend = metered();
    let jobs: Vec<NewJob> = (0..=MAX_QUEUES)
        .map(|i| NewJob::new(QueueName::new(format!("q{i:04}")).unwrap(), json!({})).unwrap())
        .collect();
    backend.enqueue_batch(&jobs).await.unwrap();
    assert_eq!(backend.metrics().queues().len(), MAX_QUEUES);
    let text = backend.metrics().render(backend.inner().as_ref()).await;
    assert_eq!(
        sample(&text, r#"baton_jobs_enqueued_total{queue="q0000"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"baton_jobs_enqueued_total{queue="_other"}"#),
        Some(1.0)
    );
}
