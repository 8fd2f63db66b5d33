//! The HTTP API: `/api/v1` for jobs and queues, `/healthz` for liveness, `/readyz` for
//! readiness.
//!
//! | Route                                | Answer                                       |
//! |--------------------------------------|----------------------------------------------|
//! | `POST /api/v1/jobs`                  | `201 {"id": 1}` for an [`EnqueueRequest`]    |
//! | `GET /api/v1/jobs/{id}`              | the [`baton_core::Job`], or `404`             |
//! | `POST /api/v1/jobs/{id}/cancel`      | the canceled job; `409` if it already ended  |
//! | `GET /api/v1/queues/{queue}/counts`  | the [`baton_core::QueueCounts`]               |
//! | `GET /healthz`                       | `200 ok`: the server is up                   |
//! | `GET /readyz`                        | `200 ready` when the backend answers; `503`  |
//! | `GET /metrics`                       | every metric in Prometheus text ([`baton_metrics`]) |
//!
//! Who may call which route is [`auth`]'s rule.
//!
//! Every answer is JSON except `/healthz` and `/readyz`'s `ready`; every error is an [`ErrorBody`](crate::wire::ErrorBody)
//! built by [`ApiError`], the one place where [`baton_core::Error`] becomes a status code.

pub mod auth;
mod error;
mod extract;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_core::{Backend, Job, JobId, Owner, QueueCounts, QueueName};
use baton_metrics::Metered;

pub use error::ApiError;
pub use extract::{ApiJson, ApiPath};

use crate::wire::{EnqueueRequest, EnqueueResponse};

/// The largest request body the API reads, in bytes; larger ones get `413`. Twice
/// [`baton_core::MAX_PAYLOAD_BYTES`], so that a payload at the limit fits with room to spare.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How long `/readyz` waits for the backend before answering `503`.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler shares: the backend.
#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Backend>,
}

/// The API's routes over `backend`, ready to serve.
pub fn router(backend: Arc<dyn Backend>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/jobs", post(enqueue_job))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/queues/{queue}/counts", get(queue_counts))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState { backend })
}

/// `GET /metrics` over `metered`'s metrics.
pub fn metrics_routes(metered: Arc<Metered<dyn Backend>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(metered)
}

/// `GET /metrics`: every metric, with each known queue's depth read now.
async fn metrics(State(metered): State<Arc<Metered<dyn Backend>>>) -> impl IntoResponse {
    let text = metered.metrics().render(metered.inner().as_ref()).await;
    ([(header::CONTENT_TYPE, baton_metrics::CONTENT_TYPE)], text)
}

/// `GET /healthz`: the server is up.
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: `200 ready` when the backend answers a cheap read (a heartbeat lookup) within
/// [`READY_TIMEOUT`]; otherwise `503` saying why, so a load balancer sends no traffic to a
/// server whose database is down.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::wire::ErrorKind::Backend,
            format!("not ready: {why}"),
        )
    };
    let probe = Owner::new("baton-readyz")?;
    match tokio::time::timeout(READY_TIMEOUT, state.backend.alive(&probe)).await {
        Ok(Ok(_)) => Ok("ready"),
        Ok(Err(error)) => Err(unavailable(format!("the backend failed: {error}"))),
        Err(_) => Err(unavailable(format!(
            "the backend did not answer within {READY_TIMEOUT:?}"
        ))),
    }
}

/// `POST /api/v1/jobs`: enqueue a job; `201` with its id.
async fn enqueue_job(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = request.to_new_job()?;
    let id = state.backend.enqueue(&job).await?;
    tracing::debug!(job = %id, queue = %job.queue(), "enqueued");
    let location = format!("/api/v1/jobs/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(EnqueueResponse { id }),
    ))
}

/// `GET /api/v1/jobs/{id}`: the job, or `404`.
async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    let id: JobId = id.parse()?;
    match state.backend.get(id).await? {
        Some(job) => Ok(Json(job)),
        None => Err(baton_core::Error::not_found(format!("job {id}")).into()),
    }
}

/// `POST /api/v1/jobs/{id}/cancel`: cancel the job; the job as it now is.
async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    let id: JobId = id.parse()?;
    let job = state.backend.cancel(id).await?;
    tracing::debug!(job = %id, "canceled");
    Ok(Json(job))
}

/// `GET /api/v1/queues/{queue}/counts`: how many jobs of the queue are in each state.
async fn queue_counts(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueCounts>, ApiError> {
    let queue = QueueName::new(queue)?;
    Ok(Json(state.backend.counts(&queue).await?))
}

async fn no_such_route(method: Method, uri: Uri) -> ApiError {
    ApiError::no_such_route(&method, &uri)
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(&method, &uri)
}
