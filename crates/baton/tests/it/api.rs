//! The HTTP API, served in-process on a memory backend and driven through the client and raw
//! requests.

use std::time::Duration;

use baton::api::auth::Access;
use baton::api::{ApiError, MAX_BODY_BYTES};
use baton::client::ClientError;
use baton::config::ApiToken;
use baton::wire::{EnqueueRequest, ErrorBody, ErrorKind};
use baton_core::{JobId, JobState, MAX_PAYLOAD_BYTES, Owner, Queue, QueueName, RetryPolicy};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{LineWaiter, TestServer};

async fn raw_post(
    server: &TestServer,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn error_kind(body: &Value) -> ErrorKind {
    serde_json::from_value::<ErrorBody>(body.clone())
        .unwrap()
        .kind
}

#[tokio::test]
async fn an_enqueued_job_can_be_read_back_pending_with_its_payload() {
    let server = TestServer::start().await;
    let payload = json!({"to": "a@example.com", "n": [1, 2]});
    let request = EnqueueRequest {
        priority: Some(5),
        delay_ms: Some(60_000),
        retry: Some(RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }),
        ..EnqueueRequest::new("emails", payload.clone())
    };
    let id = server.client.enqueue(&request).await.unwrap();
    let job = server.client.job(id).await.unwrap();
    assert_eq!(job.id, id);
    assert_eq!(job.queue.as_str(), "emails");
    assert_eq!(job.payload, payload);
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.priority.0, 5);
    assert_eq!(job.retry.max_attempts, 3);
    assert_eq!(
        job.run_at.duration_since(job.created_at),
        Duration::from_secs(60)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn enqueue_answers_201_with_the_id_and_its_location() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", server.url))
        .json(&json!({"queue": "q", "payload": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/jobs/{}", body["id"]));
    assert!(body["id"].as_i64().unwrap() > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_job_is_404_not_found() {
    let server = TestServer::start().await;
    let error = server.client.job(JobId::new(999_999)).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(error.kind(), Some(ErrorKind::NotFound));
    assert_eq!(error.to_string(), "job 999999 not found");

    let response = reqwest::get(format!("{}/api/v1/jobs/999999", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "job 999999 not found", "kind": "not_found"})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let server = TestServer::start().await;
    let (status, body) = raw_post(&server, "/api/v1/jobs", "{\"queue\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(&body), ErrorKind::InvalidInput);
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("request body is not valid json"),
        "{message}"
    );

    let (status, body) = raw_post(&server, "/api/v1/jobs", r#"{"payload": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("missing field `queue`"), "{message}");

    let (status, body) = raw_post(
        &server,
        "/api/v1/jobs",
        r#"{"queue": "q", "payload": 1, "prio": 3}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("prio"), "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", server.url))
        .body(r#"{"queue": "q", "payload": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_kind(&body), ErrorKind::InvalidInput);
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_queue_names_are_400_invalid_input() {
    let server = TestServer::start().await;
    for name in ["", " padded", "tab\tin"] {
        let error = server
            .client
            .enqueue(&EnqueueRequest::new(name, json!(1)))
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST), "{name:?}");
        assert_eq!(error.kind(), Some(ErrorKind::InvalidInput), "{name:?}");
        assert!(error.to_string().contains("queue name"), "{error}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_a_payload_over_its_limit_is_400() {
    let server = TestServer::start().await;
    let huge = format!(
        r#"{{"queue": "q", "payload": "{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let (status, body) = raw_post(&server, "/api/v1/jobs", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_kind(&body), ErrorKind::InvalidInput);

    let request = EnqueueRequest::new("q", json!("x".repeat(MAX_PAYLOAD_BYTES + 10)));
    let error = server.client.enqueue(&request).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    assert!(error.to_string().contains("payload is"), "{error}");

    // The server is still serving after refusing both.
    server
        .client
        .enqueue(&EnqueueRequest::new("q", json!(1)))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn bad_ids_and_unknown_routes_answer_json_errors() {
    let server = TestServer::start().await;
    for (path, status, kind) in [
        (
            "/api/v1/jobs/abc",
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidInput,
        ),
        (
            "/api/v1/jobs/0",
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidInput,
        ),
        (
            "/api/v1/nothing",
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
        ),
    ] {
        let response = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_kind(&body), kind, "{path}");
    }
    let response = reqwest::Client::new()
        .delete(format!("{}/api/v1/jobs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_kind(&body), ErrorKind::InvalidInput);
    server.shutdown().await;
}

#[tokio::test]
async fn cancel_ends_a_pending_job_and_conflicts_with_a_finished_one() {
    let server = TestServer::start().await;
    let pending = server
        .client
        .enqueue(&EnqueueRequest::new("q", json!("a")))
        .await
        .unwrap();
    let canceled = server.client.cancel(pending).await.unwrap();
    assert_eq!(canceled.state, JobState::Canceled);

    let done = server
        .client
        .enqueue(&EnqueueRequest::new("q", json!("b")))
        .await
        .unwrap();
    let queue = QueueName::new("q").unwrap();
    let owner = Owner::new("test-worker").unwrap();
    let reserved = server
        .backend
        .reserve(&[queue], &owner, Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(reserved[0].job.id, done);
    server
        .backend
        .complete(&reserved[0].lease, json!("ok"))
        .await
        .unwrap();
    let error = server.client.cancel(done).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::CONFLICT));
    assert_eq!(error.kind(), Some(ErrorKind::Conflict));

    let error = server.client.cancel(JobId::new(424_242)).await.unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::NotFound));
    server.shutdown().await;
}

#[tokio::test]
async fn retry_puts_a_canceled_job_back_and_conflicts_with_a_succeeded_one() {
    let server = TestServer::start().await;
    let id = server
        .client
        .enqueue(&EnqueueRequest::new("q", json!("again")))
        .await
        .unwrap();
    server.client.cancel(id).await.unwrap();
    let retried = server.client.retry(id).await.unwrap();
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.finished_at, None);

    let queue = QueueName::new("q").unwrap();
    let owner = Owner::new("test-worker").unwrap();
    let reserved = server
        .backend
        .reserve(&[queue], &owner, Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(reserved[0].job.id, id, "the retried job runs again");
    server
        .backend
        .complete(&reserved[0].lease, json!("ok"))
        .await
        .unwrap();
    let error = server.client.retry(id).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::CONFLICT));
    let error = server.client.retry(JobId::new(424_242)).await.unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::NotFound));
    server.shutdown().await;
}

#[tokio::test]
async fn counts_tell_how_many_jobs_of_a_queue_are_in_each_state() {
    let server = TestServer::start().await;
    for n in 0..3 {
        let request = EnqueueRequest::new("counted/with slash", json!(n));
        server.client.enqueue(&request).await.unwrap();
    }
    let id = server
        .client
        .enqueue(&EnqueueRequest::new("counted/with slash", json!(3)))
        .await
        .unwrap();
    server.client.cancel(id).await.unwrap();
    let counts = server.client.counts("counted/with slash").await.unwrap();
    assert_eq!((counts.pending, counts.canceled, counts.total()), (3, 1, 4));
    let empty = server.client.counts("other").await.unwrap();
    assert_eq!(empty.total(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start().await;
    let response = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = baton::client::Client::new(&url).unwrap();
    let error = client.job(JobId::new(1)).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("cannot reach baton at {url}: is `baton serve` running?")
    );
}

#[test]
fn core_errors_map_to_their_status_and_kind() {
    use baton_core::Error;
    let cases = [
        (
            Error::invalid("x"),
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidInput,
        ),
        (
            Error::not_found("job 1"),
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
        ),
        (
            Error::conflict("x"),
            StatusCode::CONFLICT,
            ErrorKind::Conflict,
        ),
        (
            Error::lease_lost("job 1"),
            StatusCode::CONFLICT,
            ErrorKind::LeaseLost,
        ),
        (
            Error::transient(std::io::Error::other("down")),
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Backend,
        ),
    ];
    for (error, status, kind) in cases {
        let message = error.to_string();
        let api = ApiError::from(error);
        assert_eq!(api.status(), status, "{message}");
        assert_eq!(api.body().kind, kind, "{message}");
        assert_eq!(api.body().error, message);
    }
}

/// Bodies made of mutations of a valid request: truncated, bytes flipped, fields of the wrong
/// type, deep nesting, invalid UTF-8.
fn mangled_bodies(rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let valid = br#"{"queue":"q","payload":{"a":[1,2,3]},"priority":1,"delay_ms":5}"#.to_vec();
    let mut bodies = vec![
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        br#"{"queue":7,"payload":1}"#.to_vec(),
        br#"{"queue":"q","payload":1,"priority":"high"}"#.to_vec(),
        br#"{"queue":"q","payload":1,"delay_ms":-1}"#.to_vec(),
        br#"{"queue":"q","payload":1,"retry":{"max_attempts":0}}"#.to_vec(),
        br#"{"queue":"q\u0000","payload":1}"#.to_vec(),
        vec![0xff, 0xfe, b'{'],
        format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
    ];
    for _ in 0..300 {
        let mut body = valid.clone();
        match rng.u8(0..3) {
            0 => body.truncate(rng.usize(0..body.len())),
            1 => {
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(0..body.len());
                    body[at] = rng.u8(..);
                }
            }
            _ => {
                let at = rng.usize(0..body.len());
                body.insert(at, *b"{}[]\",:\\".get(rng.usize(0..8)).unwrap_or(&b'x'));
            }
        }
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn malformed_bodies_get_a_json_client_error_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for body in mangled_bodies(&mut rng) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let (status, reply) = raw_post(&server, "/api/v1/jobs", body).await;
        if status == StatusCode::CREATED {
            let id: JobId = serde_json::from_value(reply["id"].clone()).unwrap();
            let stored = server.client.job(id).await;
            assert!(
                stored.is_ok(),
                "seed {seed}: accepted body {shown:?} was not stored"
            );
            continue;
        }
        assert!(
            status.is_client_error(),
            "seed {seed}: body {shown:?} got {status}: {reply}"
        );
        assert!(
            serde_json::from_value::<ErrorBody>(reply.clone()).is_ok(),
            "seed {seed}: body {shown:?} got a reply that is not an error body: {reply}"
        );
    }
    let id = server
        .client
        .enqueue(&EnqueueRequest::new("q", json!("still serving")))
        .await
        .unwrap();
    assert!(server.client.job(id).await.is_ok());
}

#[tokio::test]
async fn readyz_answers_503_while_the_backend_fails_and_200_once_it_answers() {
    let backend = baton_testkit::faulty::Faulty::new(baton_memory::MemoryBackend::new());
    let control = backend.control();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton::serve::serve(
        listener,
        std::sync::Arc::new(backend),
        std::time::Duration::from_secs(3600),
        async move {
            let _ = stopped.await;
        },
    ));

    control.set_mode(baton_testkit::faulty::Mode::Fail);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_kind(&body), ErrorKind::Backend);
    assert!(
        body["error"].as_str().unwrap().starts_with("not ready"),
        "{body}"
    );

    control.heal();
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ready");

    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

const TOKEN: &str = "api-token-0123456789";

/// A request of `method` to `path` with `token` as its bearer token, if any: the status.
async fn status_of(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> StatusCode {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if path == "/api/v1/jobs" {
        request = request.json(&json!({"queue": "guarded", "payload": {}}));
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn with_an_api_token_every_call_but_the_probes_needs_it() {
    let server = TestServer::start_with(Access::new(Some(ApiToken(TOKEN.to_owned())), false)).await;
    for (method, path) in [
        (Method::POST, "/api/v1/jobs"),
        (Method::GET, "/api/v1/jobs/1"),
        (Method::POST, "/api/v1/jobs/1/cancel"),
        (Method::GET, "/api/v1/queues/guarded/counts"),
        (Method::GET, "/api/monitoring"),
        (Method::GET, "/api/mastercontrols"),
        (Method::GET, "/metrics"),
    ] {
        let without = status_of(&server, method.clone(), path, None).await;
        assert_eq!(without, StatusCode::UNAUTHORIZED, "{method} {path}");
        let wrong = status_of(
            &server,
            method.clone(),
            path,
            Some("wrong-token-0123456789"),
        )
        .await;
        assert_eq!(wrong, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // Nothing got through: no job was enqueued.
    let counts = server
        .backend
        .counts(&QueueName::new("guarded").unwrap())
        .await
        .unwrap();
    assert_eq!(counts.pending, 0);

    assert_eq!(
        status_of(&server, Method::POST, "/api/v1/jobs", Some(TOKEN)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(&server, Method::GET, "/api/v1/jobs/1", Some(TOKEN)).await,
        StatusCode::OK
    );
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            status_of(&server, Method::GET, probe, None).await,
            StatusCode::OK
        );
    }
    // The client sends the token it is given.
    let error = server.client.job(JobId::new(1)).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{error}");
    let client = server
        .client
        .clone()
        .with_token(Some(&ApiToken(TOKEN.to_owned())));
    assert_eq!(
        client.job(JobId::new(1)).await.unwrap().queue.as_str(),
        "guarded"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn open_reads_let_reads_through_without_the_token_but_not_writes() {
    let server = TestServer::start_with(Access::new(Some(ApiToken(TOKEN.to_owned())), true)).await;
    assert_eq!(
        status_of(&server, Method::POST, "/api/v1/jobs", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_of(&server, Method::POST, "/api/v1/jobs", Some(TOKEN)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(&server, Method::GET, "/api/v1/jobs/1", None).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&server, Method::GET, "/api/v1/queues/guarded/counts", None).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&server, Method::POST, "/api/v1/jobs/1/cancel", None).await,
        StatusCode::UNAUTHORIZED
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_what_the_api_did_and_report_queue_depths() {
    let server = TestServer::start().await;
    for _ in 0..2 {
        let (status, _) = raw_post(
            &server,
            "/api/v1/jobs",
            r#"{"queue":"metered","payload":{}}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = raw_post(&server, "/api/v1/jobs/1/cancel", "").await;
    assert_eq!(status, StatusCode::OK);

    let response = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for line in [
        r#"baton_jobs_enqueued_total{queue="metered"} 2"#,
        r#"baton_jobs_finished_total{queue="metered",outcome="canceled"} 1"#,
        r#"baton_jobs{queue="metered",state="pending"} 1"#,
        r#"baton_jobs{queue="metered",state="canceled"} 1"#,
        r#"baton_backend_calls_total{call="enqueue",outcome="ok"} 2"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_route_it_lists_answers() {
    let server = TestServer::start().await;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{document}"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["api_token"]["scheme"],
        "bearer"
    );

    let mut listed = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    // Every route of the server, as the module documentation of each lists them.
    let mut expected = [
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/v1/openapi.json",
        "GET /api/v1/jobs",
        "POST /api/v1/jobs",
        "POST /api/v1/jobs/batch",
        "GET /api/v1/jobs/{id}",
        "POST /api/v1/jobs/{id}/cancel",
        "POST /api/v1/jobs/{id}/retry",
        "GET /api/v1/queues/{queue}/counts",
        "GET /api/monitoring",
        "GET /api/v1/locks",
        "GET /api/v1/workers",
        "GET /api/v1/queues",
        "GET /api/v1/stats",
        "GET /api/v1/pools",
        "GET /api/v1/tasks",
        "GET /api/v1/tasks/{id}/log",
        "GET /",
        "GET /ui/app.js",
        "GET /ui/style.css",
        "POST /api/v1/queues/{queue}/pause",
        "POST /api/v1/queues/{queue}/resume",
        "GET /api/v1/queues/paused",
        "GET /api/v1/masters",
        "POST /api/v1/masters/{name}/disable",
        "POST /api/v1/masters/{name}/enable",
        "GET /api/mastercontrols",
        "POST /api/mastercontrols/disable",
        "POST /api/mastercontrols/enable",
    ];
    expected.sort_unstable();
    assert_eq!(listed, expected);

    // Each listed route is served: whatever it answers, it is not "no such route" or "method
    // not allowed".
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "1")
            .replace("{queue}", "q")
            .replace("{name}", "m");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", server.url))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{route}: {body}");
        if status == StatusCode::NOT_FOUND {
            let error: ErrorBody = serde_json::from_str(&body).unwrap();
            assert!(!error.error.contains("no such route"), "{route}: {body}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn locks_lists_every_lock_held_with_its_holder_and_reason() {
    use baton_core::{Lock, LockName, LockRequest};

    let server = TestServer::start().await;
    let request = LockRequest::new(
        [
            LockName::new("app:1").unwrap(),
            LockName::new("app:2").unwrap(),
        ],
        Owner::new("ops-1").unwrap(),
        Duration::from_secs(30),
    )
    .unwrap()
    .with_reason("migration of apps 1 and 2")
    .unwrap();
    server.backend.acquire(&request).await.unwrap();
    let held: Value = server.get_json("/api/v1/locks").await;
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    for (holder, name) in held.iter().zip(["app:1", "app:2"]) {
        assert_eq!(holder["name"], name);
        assert_eq!(holder["reason"], "migration of apps 1 and 2");
        assert_eq!(holder["lease"]["owner"], "ops-1");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn locks_reads_out_a_waiting_tasks_place_in_line() {
    use baton_core::{Lock, LockName, LockRequest};
    use baton_tasklocks::Acquired;
    use std::sync::Arc;

    let server = TestServer::start().await;
    let busy = LockName::new("app:7").unwrap();
    let holder = LockRequest::new(
        [busy.clone()],
        Owner::new("ops-1").unwrap(),
        Duration::from_secs(30),
    )
    .unwrap()
    .with_reason("migration")
    .unwrap();
    let held = server
        .backend
        .acquire(&holder)
        .await
        .unwrap()
        .granted()
        .unwrap();

    let waiter = LineWaiter::start(
        Arc::new(server.backend.clone()),
        "app:7",
        "task-runner-1",
        "nightly report",
    )
    .await;

    let entries: Value = server.get_json("/api/v1/locks").await;
    let entries = entries.as_array().unwrap();
    let held_entry = entries.iter().find(|e| e["name"] == "app:7").unwrap();
    assert_eq!(held_entry["internal"], false, "{held_entry}");
    assert!(held_entry.get("waiting").is_none(), "{held_entry}");
    let waiting: Vec<&Value> = entries
        .iter()
        .filter(|e| e["waiting"].is_object())
        .collect();
    assert_eq!(waiting.len(), 1, "{entries:?}");
    let place = waiting[0];
    assert_eq!(place["internal"], true, "{place}");
    assert_eq!(place["lease"]["owner"], "task-runner-1", "{place}");
    assert_eq!(place["waiting"]["lock"], "app:7", "{place}");
    assert_eq!(place["waiting"]["reason"], "nightly report", "{place}");
    assert!(place["waiting"]["ticket"].as_u64().unwrap() > 0, "{place}");

    server.backend.release_lock(&held).await.unwrap();
    let acquired = waiter.outcome().await;
    let Acquired::Granted(locks) = acquired else {
        panic!("the waiter did not get the lock: {acquired:?}");
    };
    locks.release().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_queue_paused_over_the_api_holds_its_jobs_until_resumed() {
    let server = TestServer::start().await;
    let id = server
        .client
        .enqueue(&EnqueueRequest::new("reports", json!({})))
        .await
        .unwrap();
    let state = server.client.pause("reports").await.unwrap();
    assert!(state.paused);
    let paused: Vec<String> = server.get_json("/api/v1/queues/paused").await;
    assert_eq!(paused, ["reports"]);

    let queue = QueueName::new("reports").unwrap();
    let owner = Owner::new("test-worker").unwrap();
    let ttl = Duration::from_secs(30);
    let held = server
        .backend
        .reserve(std::slice::from_ref(&queue), &owner, ttl, 1)
        .await
        .unwrap();
    assert!(held.is_empty(), "a paused queue handed out {held:?}");

    let state = server.client.resume("reports").await.unwrap();
    assert!(!state.paused);
    let reserved = server
        .backend
        .reserve(&[queue], &owner, ttl, 1)
        .await
        .unwrap();
    assert_eq!(reserved[0].job.id, id);
    let error = server.client.pause("bad queue\u{1}").await.unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::InvalidInput));
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_is_enqueued_all_together_or_not_at_all() {
    let server = TestServer::start().await;
    let jobs: Vec<EnqueueRequest> = (0..3)
        .map(|n| EnqueueRequest::new("batch", json!({ "n": n })))
        .collect();
    let ids = server.client.enqueue_batch(&jobs).await.unwrap();
    assert_eq!(ids.len(), 3);
    for (n, id) in ids.iter().enumerate() {
        let job = server.client.job(*id).await.unwrap();
        assert_eq!(job.payload, json!({ "n": n }));
    }

    let mut bad = jobs.clone();
    bad[1].queue = "bad queue\u{1}".to_owned();
    let error = server.client.enqueue_batch(&bad).await.unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::InvalidInput));
    assert!(error.to_string().contains("job 1"), "{error}");
    let error = server.client.enqueue_batch(&[]).await.unwrap_err();
    assert_eq!(error.kind(), Some(ErrorKind::InvalidInput));
    let counts = server.client.counts("batch").await.unwrap();
    assert_eq!(
        counts.pending, 3,
        "a refused batch enqueued something: {counts:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn jobs_are_listed_newest_first_a_page_at_a_time() {
    use baton::wire::ListQuery;

    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for queue in ["a", "b", "a"] {
        ids.push(
            server
                .client
                .enqueue(&EnqueueRequest::new(queue, json!(queue)))
                .await
                .unwrap(),
        );
    }
    server.client.cancel(ids[0]).await.unwrap();
    let first = server
        .client
        .list(&ListQuery {
            limit: Some(2),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let listed: Vec<JobId> = first.jobs.iter().map(|job| job.id).collect();
    assert_eq!(listed, [ids[2], ids[1]]);
    let second = server
        .client
        .list(&ListQuery {
            limit: Some(2),
            before: first.next.map(JobId::get),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        second.jobs.iter().map(|job| job.id).collect::<Vec<_>>(),
        [ids[0]]
    );
    assert_eq!(second.next, None);

    let canceled_in_a = server
        .client
        .list(&ListQuery {
            queue: Some("a".to_owned()),
            state: Some("canceled".to_owned()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(canceled_in_a.jobs.len(), 1);
    assert_eq!(canceled_in_a.jobs[0].id, ids[0]);

    for bad in [
        "state=done",
        "limit=0",
        "limit=501",
        "colour=red",
        "before=x",
    ] {
        let response = reqwest::get(format!("{}/api/v1/jobs?{bad}", server.url))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.kind, ErrorKind::InvalidInput, "{bad}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_without_a_broker_says_so_when_asked_for_its_workers() {
    let server = TestServer::start().await;
    let listed: Value = server.get_json("/api/v1/workers").await;
    assert_eq!(listed, json!({"broker": false, "workers": []}));
}

#[tokio::test]
async fn queues_are_listed_by_name_with_their_counts_a_page_at_a_time() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for queue in ["c", "a", "b", "a"] {
        let response = http
            .post(format!("{}/api/v1/jobs", server.url))
            .json(&json!({"queue": queue, "payload": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    http.post(format!("{}/api/v1/queues/b/pause", server.url))
        .send()
        .await
        .unwrap();
    let first: Value = server.get_json("/api/v1/queues?limit=2").await;
    assert_eq!(first["queues"][0]["queue"], "a");
    assert_eq!(first["queues"][0]["counts"]["pending"], 2);
    assert_eq!(first["queues"][0]["paused"], false);
    assert_eq!(first["queues"][1]["queue"], "b");
    assert_eq!(first["queues"][1]["paused"], true);
    assert_eq!(first["next"], "b");
    let second: Value = server.get_json("/api/v1/queues?limit=2&after=b").await;
    assert_eq!(second["queues"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["queues"][0]["queue"], "c");
    assert_eq!(second["next"], Value::Null);
    let bad = reqwest::get(format!("{}/api/v1/queues?limit=0", server.url))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
