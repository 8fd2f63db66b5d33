//! The HTTP API: `/api/v1` for jobs and queues, `/healthz` for liveness, `/readyz` for
//! readiness.
//!
//! | Route                                | Answer                                       |
//! |--------------------------------------|----------------------------------------------|
//! | `POST /api/v1/jobs`                  | `201 {"id": 1}` for an [`EnqueueRequest`]    |
//! | `POST /api/v1/jobs/batch`            | `201 {"ids": […]}` for an [`EnqueueBatchRequest`], all or nothing |
//! | `GET /api/v1/jobs?queue=&state=&before=&limit=` | a [`JobList`], newest first      |
//! | `GET /api/v1/jobs/{id}`              | the [`baton_core::Job`], or `404`             |
//! | `POST /api/v1/jobs/{id}/cancel`      | the canceled job; `409` if it already ended  |
//! | `POST /api/v1/jobs/{id}/retry`       | the job, pending again; `409` if it succeeded |
//! | `GET /api/v1/queues/{queue}/counts`  | the [`baton_core::QueueCounts`]               |
//! | `POST /api/v1/queues/{queue}/pause`  | `{"queue": …, "paused": true}`               |
//! | `POST /api/v1/queues/{queue}/resume` | `{"queue": …, "paused": false}`              |
//! | `GET /api/v1/queues/paused`          | the paused queues' names                     |
//! | `GET /api/v1/locks`                  | every lock held now, waiters' places read out |
//! | `GET /api/v1/workers`                | a [`WorkerList`]: the broker's connected workers |
//! | `GET /api/v1/queues`, `/stats`, `/pools`, `/tasks` | what the dashboard reads: see [`crate::insight`] |
//! | `GET /`, `/ui/*`                     | the dashboard: see [`crate::dashboard`]       |
//! | `GET /healthz`                       | `200 ok`: the server is up                   |
//! | `GET /readyz`                        | `200 ready` when the backend answers; `503`  |
//! | `GET /metrics`                       | every metric in Prometheus text ([`baton_metrics`]) |
//! | `GET /api/v1/openapi.json`           | the OpenAPI document of every route          |
//!
//! Every route is registered with its OpenAPI description (`#[utoipa::path]`, collected by
//! `utoipa_axum`), so the document served at `/api/v1/openapi.json` lists every route the
//! server answers.
//!
//! Who may call which route is [`auth`]'s rule.
//!
//! Every answer is JSON except `/healthz` and `/readyz`'s `ready`; every error is an [`ErrorBody`](crate::wire::ErrorBody)
//! built by [`ApiError`], the one place where [`baton_core::Error`] becomes a status code.

pub mod auth;
mod error;
mod extract;
mod trace;

use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::{Json, Router};
use baton_broker::Roster;
use baton_core::{Backend, Job, JobFilter, JobId, Owner, QueueCounts, QueueName};
use baton_metrics::Metered;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{InfoBuilder, LicenseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use extract::{ApiJson, ApiPath, ApiQuery};

use crate::wire::{
    EnqueueBatchRequest, EnqueueBatchResponse, EnqueueRequest, EnqueueResponse, ErrorBody, JobList,
    ListQuery, LockEntry, MAX_BATCH_REQUEST, QueueState, WorkerList,
};
use auth::Access;

/// The largest request body the API reads, in bytes; larger ones get `413`. Twice
/// [`baton_core::MAX_PAYLOAD_BYTES`], so that a payload at the limit fits with room to spare.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How long `/readyz` waits for the backend before answering `503`.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler shares: the backend, and the broker's roster when this server runs one.
#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Backend>,
    roster: Option<Roster>,
}

/// The whole HTTP application over `metered`: the routes of the API, the master controls,
/// monitoring and metrics, the dashboard's reads ([`crate::insight`]), their OpenAPI document,
/// and `access` guarding them all. `roster` reads the workers of the broker this server runs,
/// if it runs one; `insight` is what the upkeep loop gathered and where tasks are recorded.
pub fn app(
    metered: Arc<Metered<dyn Backend>>,
    access: Access,
    roster: Option<Roster>,
    insight: crate::insight::Insight,
) -> Router {
    let backend: Arc<dyn Backend> = metered.clone();
    let document = Arc::new(OnceLock::new());
    let (router, mut openapi) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(enqueue_job, list_jobs))
        .routes(routes!(enqueue_batch))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(queue_counts))
        .routes(routes!(locks))
        .routes(routes!(pause_queue))
        .routes(routes!(resume_queue))
        .routes(routes!(paused_queues))
        .routes(routes!(workers))
        .with_state(AppState {
            backend: backend.clone(),
            roster,
        })
        .merge(
            OpenApiRouter::new()
                .routes(routes!(metrics))
                .with_state(metered),
        )
        .merge(
            OpenApiRouter::new()
                .routes(routes!(openapi_document))
                .with_state(document.clone()),
        )
        .merge(crate::monitoring::routes(backend.clone()))
        .merge(crate::insight::routes(backend.clone(), insight))
        .merge(crate::dashboard::routes())
        .merge(crate::master::routes(backend))
        .split_for_parts();
    describe(&mut openapi);
    // Rendered once; the document cannot change while the server runs.
    let _ = document.set(openapi.to_pretty_json().unwrap_or_default());
    let access = Arc::new(access);
    router
        .route_layer(axum::middleware::from_fn(trace::request_span))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(access, auth::require))
}

/// The document's title, version, description and bearer-token scheme.
fn describe(openapi: &mut utoipa::openapi::OpenApi) {
    openapi.info = InfoBuilder::new()
        .title("Baton")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Baton's HTTP API: jobs and queues, master controls, claim monitoring, health and \
             metrics. With an api_token configured, every route but /healthz and /readyz needs \
             it as a bearer token (reads only when api_open_reads is off).",
        ))
        .license(Some(
            LicenseBuilder::new()
                .name(env!("CARGO_PKG_LICENSE"))
                .build(),
        ))
        .build();
    openapi
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "api_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    openapi.security = Some(vec![SecurityRequirement::new(
        "api_token",
        Vec::<String>::new(),
    )]);
}

/// `GET /api/v1/openapi.json`: the OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", body = Object)))]
async fn openapi_document(State(document): State<Arc<OnceLock<String>>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.get().cloned().unwrap_or_default(),
    )
}

/// `GET /metrics`: every metric, with each known queue's depth read now.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Every metric in Prometheus (OpenMetrics) text", body = String,
        content_type = "application/openmetrics-text")))]
async fn metrics(State(metered): State<Arc<Metered<dyn Backend>>>) -> impl IntoResponse {
    let text = metered.metrics().render(metered.inner().as_ref()).await;
    ([(header::CONTENT_TYPE, baton_metrics::CONTENT_TYPE)], text)
}

/// `GET /healthz`: the server is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "`ok`: the server is up", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: `200 ready` when the backend answers a cheap read (a heartbeat lookup) within
/// [`READY_TIMEOUT`]; otherwise `503` saying why, so a load balancer sends no traffic to a
/// server whose database is down.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "`ready`: the backend answers", body = String, content_type = "text/plain"),
        (status = 503, description = "The backend failed or did not answer in time", body = ErrorBody),
    ))]
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
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued; `Location` names the job", body = EnqueueResponse),
        (status = 400, description = "A bad queue name, payload or retry policy", body = ErrorBody),
        (status = 401, description = "No API token", body = ErrorBody),
        (status = 403, description = "A wrong API token", body = ErrorBody),
        (status = 413, description = "A body over the size limit", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ))]
async fn enqueue_job(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let job = request.to_new_job()?;
    let span = baton_trace::enqueue_span(job.queue().as_str(), 1);
    let job = span.in_scope(|| baton_trace::stamp(job));
    let id = state.backend.enqueue(&job).instrument(span).await?;
    tracing::debug!(job = %id, queue = %job.queue(), "enqueued");
    let location = format!("/api/v1/jobs/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(EnqueueResponse { id }),
    ))
}

/// `POST /api/v1/jobs/batch`: enqueue jobs all together; `201` with their ids in order. A bad
/// job refuses the whole batch, naming its index.
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = EnqueueBatchRequest,
    responses(
        (status = 201, description = "Every job enqueued; ids in the order of the request", body = EnqueueBatchResponse),
        (status = 400, description = "No jobs, too many, or a bad job (named by its index); nothing was enqueued", body = ErrorBody),
        (status = 413, description = "A body over the size limit", body = ErrorBody),
    ))]
async fn enqueue_batch(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EnqueueBatchRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let count = request.jobs.len();
    if count == 0 || count > MAX_BATCH_REQUEST {
        return Err(baton_core::Error::invalid(format!(
            "a batch holds 1 to {MAX_BATCH_REQUEST} jobs, not {count}"
        ))
        .into());
    }
    let jobs = request
        .jobs
        .iter()
        .enumerate()
        .map(|(index, job)| {
            job.to_new_job()
                .map_err(|error| baton_core::Error::invalid(format!("job {index}: {error}")))
        })
        .collect::<baton_core::Result<Vec<_>>>()?;
    // A batch may span queues; its span names the queue only when there is one.
    let first = jobs[0].queue();
    let queue = if jobs.iter().all(|job| job.queue() == first) {
        first.as_str()
    } else {
        "several queues"
    };
    let span = baton_trace::enqueue_span(queue, jobs.len());
    let jobs: Vec<_> = span.in_scope(|| jobs.into_iter().map(baton_trace::stamp).collect());
    let ids = state.backend.enqueue_batch(&jobs).instrument(span).await?;
    tracing::debug!(jobs = ids.len(), "enqueued a batch");
    Ok((StatusCode::CREATED, Json(EnqueueBatchResponse { ids })))
}

/// The page size of `GET /api/v1/jobs` when the query names none.
const DEFAULT_LIST_LIMIT: usize = 50;

/// `GET /api/v1/jobs`: jobs newest first, filtered by queue and state, a page at a time.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "Jobs newest first, and the `before` of the next page", body = JobList),
        (status = 400, description = "An invalid queue name, state, id or limit", body = ErrorBody),
    ))]
async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let filter = JobFilter {
        queue: query.queue.map(QueueName::new).transpose()?,
        state: query.state.as_deref().map(str::parse).transpose()?,
        before: query.before.map(JobId::new),
        limit: query.limit.unwrap_or(DEFAULT_LIST_LIMIT),
    };
    let page = state.backend.list(&filter).await?;
    Ok(Json(JobList {
        jobs: page.jobs,
        next: page.next,
    }))
}

/// `GET /api/v1/jobs/{id}`: the job, or `404`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job: its queue, payload, state, attempts, result or error, lease and history", body = Object),
        (status = 400, description = "An id that is not a positive integer", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
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
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, now canceled", body = Object),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job already ended", body = ErrorBody),
    ))]
async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    let id: JobId = id.parse()?;
    let job = state.backend.cancel(id).await?;
    tracing::debug!(job = %id, "canceled");
    Ok(Json(job))
}

/// `POST /api/v1/jobs/{id}/retry`: run a failed or canceled job again; the job as it now is.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, pending and due now (a pending or running job as it is)", body = Object),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job succeeded", body = ErrorBody),
    ))]
async fn retry_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Job>, ApiError> {
    let id: JobId = id.parse()?;
    let job = state.backend.retry(id).await?;
    tracing::debug!(job = %id, "retried");
    Ok(Json(job))
}

/// `POST /api/v1/queues/{queue}/pause`: hold the queue's jobs back from workers.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, paused: none of its jobs is reserved until it is resumed; enqueueing goes on", body = QueueState),
        (status = 400, description = "An invalid queue name", body = ErrorBody),
    ))]
async fn pause_queue(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueState>, ApiError> {
    set_paused(&state, queue, true).await
}

/// `POST /api/v1/queues/{queue}/resume`: hand the queue's jobs to workers again.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "The queue, resumed; its waiting workers are woken", body = QueueState),
        (status = 400, description = "An invalid queue name", body = ErrorBody),
    ))]
async fn resume_queue(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueState>, ApiError> {
    set_paused(&state, queue, false).await
}

/// Pauses or resumes `queue`; its state as it now is.
async fn set_paused(
    state: &AppState,
    queue: String,
    paused: bool,
) -> Result<Json<QueueState>, ApiError> {
    let name = QueueName::new(&queue)?;
    if paused {
        state.backend.pause(&name).await?;
    } else {
        state.backend.resume(&name).await?;
    }
    tracing::info!(%name, paused, "queue state set");
    Ok(Json(QueueState { queue, paused }))
}

/// `GET /api/v1/queues/paused`: the paused queues, in name order.
#[utoipa::path(get, path = "/api/v1/queues/paused", tag = "queues",
    responses((status = 200, description = "The paused queues' names, in name order", body = Vec<String>)))]
async fn paused_queues(State(state): State<AppState>) -> Result<Json<Vec<QueueName>>, ApiError> {
    Ok(Json(state.backend.paused().await?))
}

/// `GET /api/v1/locks`: every lock held now, by name, with the task waiters' places in line
/// read out.
#[utoipa::path(get, path = "/api/v1/locks", tag = "locks",
    responses((status = 200, description = "Every lock held now: its name, its holder's lease (owner, fencing token, expiry), reason and since when; `internal` for the names the task locks keep for themselves, and for a task's place in a lock's line, `waiting`: the lock, the ticket and the waiter's reason", body = Vec<LockEntry>)))]
async fn locks(State(state): State<AppState>) -> Result<Json<Vec<LockEntry>>, ApiError> {
    let holders = state.backend.holders().await?;
    Ok(Json(holders.into_iter().map(LockEntry::new).collect()))
}

/// `GET /api/v1/workers`: the workers connected to this server's broker, by queue then name.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    responses((status = 200, description = "Whether this server runs the broker, and each connected worker: name, connection, queue, state (`waiting` or `running`), current job, when it connected and when it was last heard from", body = WorkerList)))]
async fn workers(State(state): State<AppState>) -> Json<WorkerList> {
    let workers = match &state.roster {
        Some(roster) => roster.workers().await,
        None => Vec::new(),
    };
    Json(WorkerList {
        broker: state.roster.is_some(),
        workers,
    })
}

/// `GET /api/v1/queues/{queue}/counts`: how many jobs of the queue are in each state.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/counts", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "Jobs per state: pending, running, succeeded, failed, canceled", body = Object),
        (status = 400, description = "An invalid queue name", body = ErrorBody),
    ))]
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
