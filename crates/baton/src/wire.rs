//! The JSON bodies of the HTTP API, shared by the server ([`crate::api`]) and the client
//! ([`crate::client`]) so that the two cannot drift apart. Jobs and counts travel as the
//! `baton-core` types themselves.

use std::time::Duration;

use baton_core::{JobId, LockHolder, LockName, NewJob, Priority, QueueName, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The body of `POST /api/v1/jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The queue to put the job on.
    pub queue: String,
    /// What the worker is given: any JSON value.
    pub payload: Value,
    /// Among due jobs, higher runs first; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Milliseconds from now before the job is due; due at once when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// How the job is retried; the default policy when absent. Fields left out take their
    /// default, so `{"max_attempts": 3}` is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub retry: Option<RetryPolicy>,
}

impl EnqueueRequest {
    /// A request for `queue` carrying `payload`, with every option left to its default.
    pub fn new(queue: impl Into<String>, payload: Value) -> Self {
        Self {
            queue: queue.into(),
            payload,
            priority: None,
            delay_ms: None,
            retry: None,
        }
    }

    /// The job this request asks for, every part checked.
    ///
    /// # Errors
    ///
    /// [`baton_core::Error::InvalidInput`] for a bad queue name, an oversized payload or a
    /// nonsensical retry policy.
    pub fn to_new_job(&self) -> baton_core::Result<NewJob> {
        let queue = QueueName::new(&self.queue)?;
        let mut job = NewJob::new(queue, self.payload.clone())?
            .with_priority(Priority(self.priority.unwrap_or_default()))
            .with_delay(Duration::from_millis(self.delay_ms.unwrap_or_default()));
        if let Some(retry) = self.retry {
            job = job.with_retry(retry)?;
        }
        Ok(job)
    }
}

/// The most jobs one `POST /api/v1/jobs/batch` carries.
pub const MAX_BATCH_REQUEST: usize = 1000;

/// The body of `POST /api/v1/jobs/batch`: jobs enqueued all together or not at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBatchRequest {
    /// The jobs, 1 to [`MAX_BATCH_REQUEST`] of them.
    pub jobs: Vec<EnqueueRequest>,
}

/// The body of a `201 Created` answer to `POST /api/v1/jobs/batch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnqueueBatchResponse {
    /// The new jobs' ids, in the order of the request.
    #[schema(value_type = Vec<i64>)]
    pub ids: Vec<JobId>,
}

/// The body of a `201 Created` answer to `POST /api/v1/jobs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnqueueResponse {
    /// The new job's id.
    #[schema(value_type = i64)]
    pub id: JobId,
}

/// The query of `GET /api/v1/jobs`: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this queue's jobs.
    pub queue: Option<String>,
    /// Only jobs in this state: pending, running, succeeded, failed or canceled.
    pub state: Option<String>,
    /// Only jobs older than this id: the `next` of the page before.
    pub before: Option<i64>,
    /// The most jobs to return, 1 to 500 (50 when absent).
    pub limit: Option<usize>,
}

/// The answer to `GET /api/v1/jobs`: jobs newest first, and where the next page starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs, newest first.
    #[schema(value_type = Vec<Object>)]
    pub jobs: Vec<baton_core::Job>,
    /// The `before` of the next page; absent when no older job is left. A page may be short,
    /// even empty, while `next` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub next: Option<JobId>,
}

/// Whether a queue is paused: the answer to `POST /api/v1/queues/{queue}/pause` and
/// `…/resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueState {
    /// The queue's name.
    pub queue: String,
    /// Whether its jobs are held back from workers.
    pub paused: bool,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub error: String,
    /// What kind of failure it is, for programs to act on.
    pub kind: ErrorKind,
}

/// The kinds of API error, one per [`baton_core::Error`] variant a caller acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was refused before anything changed (400, 413, 415, 405).
    InvalidInput,
    /// The job, queue or route does not exist (404).
    NotFound,
    /// The request conflicts with the current state (409).
    Conflict,
    /// A lease presented is no longer current (409).
    LeaseLost,
    /// The backend failed; the request may or may not have taken effect (503, 500).
    Backend,
    /// The request lacks the API token (401) or presents a wrong one (403).
    Unauthorized,
    /// A kind this client does not know, sent by a newer server.
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::LeaseLost => "lease_lost",
            Self::Backend => "backend",
            Self::Unauthorized => "unauthorized",
            Self::Unknown => "unknown",
        }
    }
}

/// One entry of `GET /api/v1/locks`: a held lock, flattened, and what the name means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockEntry {
    /// The lock, its holder's lease, reason and since when.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub holder: LockHolder,
    /// Whether the name is one the task locks keep for themselves (a ticket or a place in a
    /// lock's line, under `~`) rather than one a caller locked.
    pub internal: bool,
    /// For a task's place in a lock's line: what it waits for; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<LockWait>,
}

/// A task's place in the line of a lock it waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockWait {
    /// The lock waited for.
    #[schema(value_type = String)]
    pub lock: LockName,
    /// The waiter's ticket: waiters for a lock are served in ticket order.
    pub ticket: u64,
    /// The waiter's own reason.
    pub reason: String,
}

impl LockEntry {
    /// The entry of `holder`, reading a place in a lock's line from its name and reason.
    pub fn new(holder: LockHolder) -> Self {
        let waiting = baton_tasklocks::parse_queue_entry(&holder).map(|entry| LockWait {
            lock: entry.name,
            ticket: entry.ticket,
            reason: entry.reason,
        });
        Self {
            internal: baton_tasklocks::is_internal(&holder.name),
            waiting,
            holder,
        }
    }
}

/// The answer of `GET /api/v1/workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// Whether this server runs the broker; without one, no worker connects to it.
    pub broker: bool,
    /// The broker's connected workers, by queue then name.
    #[schema(value_type = Vec<Object>)]
    pub workers: Vec<baton_broker::WorkerInfo>,
}
