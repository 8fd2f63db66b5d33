//! Trace context carried inside jobs, so that a job's execution span is a child of the span that
//! enqueued it, in whatever process either runs.
//!
//! The enqueuing side calls [`stamp`] (or [`current`]) inside its span: the job records that
//! span's W3C `traceparent`. The executing side opens [`execution_span`] for the job it reserved,
//! which names the recorded span as its parent. Both are free when no OpenTelemetry layer is
//! installed: nothing is recorded, and the execution span is an ordinary `tracing` span.
//!
//! ```
//! use baton_core::{NewJob, QueueName};
//!
//! let job = NewJob::new(QueueName::new("mail")?, serde_json::json!({}))?;
//! let _span = tracing::info_span!("enqueue").entered();
//! let job = baton_trace::stamp(job); // records the span's traceparent, if it is being traced
//! # Ok::<(), baton_core::Error>(())
//! ```

use baton_core::{NewJob, TraceParent};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current span, if OpenTelemetry records it.
pub fn current() -> Option<TraceParent> {
    of(&Span::current())
}

/// The `traceparent` of `span`, if OpenTelemetry records it.
pub fn of(span: &Span) -> Option<TraceParent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    let header = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    TraceParent::parse(&header).ok()
}

/// `job` with the current span's `traceparent`, unless it already carries one (a caller's
/// context, passed on explicitly, wins).
pub fn stamp(job: NewJob) -> NewJob {
    if job.trace_parent().is_some() {
        return job;
    }
    match current() {
        Some(parent) => job.with_trace_parent(parent),
        None => job,
    }
}

/// Makes `span` a child of the remote span `parent` names. Call it before the span is first
/// entered; afterwards OpenTelemetry has fixed its parent and this does nothing.
pub fn follow(span: &Span, parent: &TraceParent) {
    let Some(remote) = span_context(parent) else {
        return;
    };
    let context = opentelemetry::Context::new().with_remote_span_context(remote);
    if let Err(error) = span.set_parent(context) {
        tracing::trace!(%error, "cannot set a span's remote parent");
    }
}

/// The span a job's execution runs in: `job` (OpenTelemetry name `run QUEUE`, kind consumer),
/// with the job's id, queue and attempt, and the span that enqueued it as its parent.
pub fn execution_span(id: &str, queue: &str, attempt: u32, parent: Option<&TraceParent>) -> Span {
    let span = tracing::info_span!(
        "job",
        otel.name = format!("run {queue}"),
        otel.kind = "consumer",
        job.id = id,
        job.queue = queue,
        job.attempt = attempt,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        follow(&span, parent);
    }
    span
}

/// The span an enqueue runs in: `enqueue` (OpenTelemetry name `enqueue QUEUE`, kind producer).
/// [`stamp`] inside it makes the job's execution its child.
pub fn enqueue_span(queue: &str, count: usize) -> Span {
    tracing::info_span!(
        "enqueue",
        otel.name = format!("enqueue {queue}"),
        otel.kind = "producer",
        job.queue = queue,
        job.count = count,
    )
}

/// The OpenTelemetry span context a `traceparent` names, marked as remote.
fn span_context(parent: &TraceParent) -> Option<SpanContext> {
    let mut parts = parent.as_str().split('-');
    let (_version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    fn traced() -> (
        InMemorySpanExporter,
        SdkTracerProvider,
        impl tracing::Subscriber,
    ) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        (
            exporter,
            provider,
            tracing_subscriber::registry().with(layer),
        )
    }

    fn job() -> NewJob {
        NewJob::new(
            baton_core::QueueName::new("mail").unwrap(),
            serde_json::json!({}),
        )
        .unwrap()
    }

    #[test]
    fn nothing_is_stamped_without_an_opentelemetry_layer() {
        let _span = enqueue_span("mail", 1).entered();
        assert_eq!(stamp(job()).trace_parent(), None);
    }

    #[test]
    fn an_execution_span_is_the_child_of_the_span_that_stamped_the_job() {
        let (exporter, provider, subscriber) = traced();
        tracing::subscriber::with_default(subscriber, || {
            let stamped = {
                let _span = enqueue_span("mail", 1).entered();
                stamp(job())
            };
            let parent = stamped
                .trace_parent()
                .expect("stamped inside a traced span")
                .clone();
            execution_span("7", "mail", 1, Some(&parent)).in_scope(|| {});
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let enqueue = spans.iter().find(|s| s.name == "enqueue mail").unwrap();
        let run = spans.iter().find(|s| s.name == "run mail").unwrap();
        assert_eq!(run.span_context.trace_id(), enqueue.span_context.trace_id());
        assert_eq!(run.parent_span_id, enqueue.span_context.span_id());
    }

    #[test]
    fn a_parent_already_carried_by_the_job_is_kept() {
        let (_exporter, _provider, subscriber) = traced();
        let given =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let kept = tracing::subscriber::with_default(subscriber, || {
            let _span = enqueue_span("mail", 1).entered();
            stamp(job().with_trace_parent(given.clone()))
        });
        assert_eq!(kept.trace_parent(), Some(&given));
    }

    #[test]
    fn a_remote_parent_round_trips_through_the_traceparent_format() {
        let given =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let context = span_context(&given).unwrap();
        assert!(context.is_remote());
        assert_eq!(
            context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            context.span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert!(context.trace_flags().is_sampled());
    }
}
