//! A work-pool job's execution span is the child of the span it was enqueued in.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use baton_memory::MemoryBackend;
use baton_workpool::{EnqueueOptions, JobStatus, PoolConfig, WorkPool};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn a_jobs_execution_span_is_the_child_of_its_enqueue_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // This file holds one test, so its process-wide subscriber is this test's alone.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut config = PoolConfig::new("traced").unwrap();
    config.poll_interval = Duration::from_millis(20);
    let pool = WorkPool::new(Arc::new(MemoryBackend::new()), config).unwrap();
    pool.register("greet", |_, args| async move { Ok(args) });
    let member = pool.start();
    let id = pool
        .enqueue("greet", json!("hi"), EnqueueOptions::new())
        .instrument(tracing::info_span!("caller"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !matches!(pool.status(id).await.unwrap(), JobStatus::Finished { .. }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    member.shutdown().await;

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let named = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
    };
    let caller = named("caller");
    let enqueue = spans
        .iter()
        .find(|span| span.name.starts_with("enqueue "))
        .expect("an enqueue span");
    let run = named("run greet");
    assert_eq!(enqueue.parent_span_id, caller.span_context.span_id());
    assert_eq!(run.parent_span_id, enqueue.span_context.span_id());
    assert_eq!(run.span_context.trace_id(), caller.span_context.trace_id());
}
