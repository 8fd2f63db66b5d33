//! Spans exported over OTLP by two `baton` processes: `serve` enqueues a job for a caller that
//! sent a `traceparent`, a `baton worker` runs it, and the worker's execution span is a child
//! of the server's enqueue span, in the caller's trace.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use baton::client::Client;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::cli::{Scratch, baton, free_port, terminate};
use crate::support::{temp_dir, wait_until_healthy};

/// The caller's trace and span, as a client of the API would send them.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One span as received, with the command of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    command: String,
    name: String,
    trace: String,
    span: String,
    parent: String,
}

/// An OTLP/HTTP receiver: every span posted to `/v1/traces`, decoded.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

impl Collector {
    async fn start(self) -> SocketAddr {
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    /// Waits, bounded, for the span named `name` that the `baton command` process exported.
    async fn span(&self, command: &str, name: &str) -> Received {
        let limit = Duration::from_secs(20);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.arrived.notified();
            let spans = self.spans.lock().unwrap().clone();
            if let Some(span) = spans
                .iter()
                .find(|s| s.command == command && s.name == name)
            {
                return span.clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "no span {name:?} from `baton {command}` within {limit:?}; received: {spans:#?}"
                );
            }
        }
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let command = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "baton.command")
            .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                AnyValue::StringValue(text) => text.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            received.push(Received {
                command: command.clone(),
                name: span.name,
                trace: hex(&span.trace_id),
                span: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
            });
        }
    }
    collector.spans.lock().unwrap().extend(received);
    collector.arrived.notify_waiters();
    // An empty ExportTraceServiceResponse: everything accepted.
    Vec::new()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn a_jobs_execution_span_in_a_worker_is_the_child_of_its_enqueue_span_in_the_server() {
    let collector = Collector::default();
    let otlp = collector.clone().start().await;
    let dir = Scratch(temp_dir("trace"));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let broker = format!("tcp://127.0.0.1:{}", free_port());
    let traced = |command: &mut tokio::process::Command| {
        command
            .env("BATON_OTLP_ENDPOINT", format!("http://{otlp}"))
            // Spans leave in batches every 100 ms rather than every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stderr(Stdio::piped());
    };
    let mut serve = baton(&dir.0, &["serve"]);
    serve
        .env("BATON_BACKEND", "sqlite://trace.db")
        .env("BATON_LISTEN", &listen)
        .env("BATON_BROKER__ENABLED", "true")
        .env("BATON_BROKER__ENDPOINT", &broker);
    traced(&mut serve);
    let serve = serve.spawn().unwrap();
    wait_until_healthy(&Client::new(&server).unwrap(), Duration::from_secs(10)).await;
    // The worker's command prints the trace context it was given: its job's execution span.
    let mut worker = baton(
        &dir.0,
        &[
            "worker",
            "--broker",
            &broker,
            "--queue",
            "traced",
            "--",
            "sh",
            "-c",
            "cat >/dev/null; printf %s \"$TRACEPARENT\"",
        ],
    );
    traced(&mut worker);
    let worker = worker.spawn().unwrap();

    let response = reqwest::Client::new()
        .post(format!("{server}/api/v1/jobs"))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"queue": "traced", "payload": {"report": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"].clone();
    let job = wait_for_success(&server, &id).await;

    let request = collector.span("serve", "POST /api/v1/jobs").await;
    assert_eq!(
        (request.trace.as_str(), request.parent.as_str()),
        (CALLER_TRACE, CALLER_SPAN),
        "the request span continues the caller's trace"
    );
    let enqueue = collector.span("serve", "enqueue traced").await;
    assert_eq!(
        (enqueue.trace.as_str(), enqueue.parent.as_str()),
        (CALLER_TRACE, request.span.as_str())
    );
    let run = collector.span("worker", "run traced").await;
    assert_eq!(
        (run.trace.as_str(), run.parent.as_str()),
        (CALLER_TRACE, enqueue.span.as_str()),
        "the worker's execution span is the child of the server's enqueue span"
    );
    assert_eq!(
        job["result"],
        format!("00-{CALLER_TRACE}-{}-01", run.span),
        "the job's command was given its execution span as TRACEPARENT"
    );

    let worker = terminate(worker).await;
    assert!(worker.status.success(), "{worker:?}");
    let serve = terminate(serve).await;
    assert!(serve.status.success(), "{serve:?}");
}

/// Polls the job until it succeeds (bounded); returns it.
async fn wait_for_success(server: &str, id: &Value) -> Value {
    let url = format!("{server}/api/v1/jobs/{id}");
    for _ in 0..200 {
        let job: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        match job["state"].as_str() {
            Some("succeeded") => return job,
            Some("pending" | "running") => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("the job did not succeed: {job}"),
        }
    }
    panic!("job {id} did not succeed within 10 s");
}
