//! The metrics a [`Metered`] memory backend renders after a known sequence of calls.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    Acquire, Error, Lock, LockName, LockRequest, NewJob, Owner, Queue, QueueName, Retry,
};
use baton_memory::MemoryBackend;
use baton_metrics::{Leader, MAX_QUEUES, Metered, Metrics, PoolClaims};
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

#[tokio::test]
async fn a_master_s_leader_changes_are_counted_from_the_second_look() {
    let metrics = Metrics::new();
    let memory = MemoryBackend::new();
    let leader = |owner: &str, token| {
        Some(Leader {
            owner: owner.to_owned(),
            token,
        })
    };
    let changes = |text: &str| {
        sample(
            text,
            "baton_master_leader_changes_total{master=\"nightly\"}",
        )
    };

    metrics.observe_leaders([("nightly".to_owned(), leader("host-a", 7))]);
    let text = metrics.render(&memory).await;
    assert_eq!(
        changes(&text),
        Some(0.0),
        "the first look only sets where it stands"
    );
    assert_eq!(
        sample(
            &text,
            "baton_master_leader{master=\"nightly\",owner=\"host-a\"}"
        ),
        Some(1.0)
    );

    // Renewals keep the token: no change.
    metrics.observe_leaders([("nightly".to_owned(), leader("host-a", 7))]);
    // host-a dies; for a while no one leads, then host-b takes over; then host-b again under a
    // new grant after its own lease lapsed.
    metrics.observe_leaders([("nightly".to_owned(), None)]);
    metrics.observe_leaders([("nightly".to_owned(), leader("host-b", 8))]);
    metrics.observe_leaders([("nightly".to_owned(), leader("host-b", 9))]);
    let text = metrics.render(&memory).await;
    assert_eq!(changes(&text), Some(2.0));
    assert_eq!(
        sample(
            &text,
            "baton_master_leader{master=\"nightly\",owner=\"host-a\"}"
        ),
        None,
        "a former leader is no longer shown"
    );
    assert_eq!(
        sample(
            &text,
            "baton_master_leader{master=\"nightly\",owner=\"host-b\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn claims_per_owner_replace_what_was_set_before() {
    let metrics = Metrics::new();
    let memory = MemoryBackend::new();
    let pool = |held: Vec<(&str, u64)>, unclaimed| PoolClaims {
        pool: "accounts".to_owned(),
        unclaimed,
        held: held.into_iter().map(|(o, n)| (o.to_owned(), n)).collect(),
    };
    metrics.set_claims(&[pool(vec![("host-a", 3), ("host-b", 2)], 1)]);
    let text = metrics.render(&memory).await;
    assert_eq!(
        sample(&text, "baton_claims{pool=\"accounts\",owner=\"host-a\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "baton_claims_unclaimed{pool=\"accounts\"}"),
        Some(1.0)
    );

    metrics.set_claims(&[pool(vec![("host-b", 6)], 0)]);
    let text = metrics.render(&memory).await;
    assert_eq!(
        sample(&text, "baton_claims{pool=\"accounts\",owner=\"host-a\"}"),
        None,
        "an owner that holds nothing is gone"
    );
    assert_eq!(
        sample(&text, "baton_claims{pool=\"accounts\",owner=\"host-b\"}"),
        Some(6.0)
    );
}
