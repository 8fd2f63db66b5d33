//! The wire protocol (see `PROTOCOL.md`): requests decoded from one JSON object each, and the
//! JSON the broker sends back.
//!
//! Decoding never panics and never trusts a field's type: every way a message can be wrong is
//! a [`DecodeError`] that the broker sends back as `{"status":"error","message":…}`.

use std::time::Duration;

use baton_core::{
    FencingToken, Job, JobId, JobState, NewJob, Priority, QueueName, RetryPolicy, TraceParent,
};
use serde_json::{Map, Value, json};

/// The queue of a job or a worker that names none.
pub const DEFAULT_QUEUE: &str = "default";

/// A request from a worker or a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// A worker waits for a job of `queue`.
    Ready {
        /// The queue it serves.
        queue: QueueName,
        /// The worker's name; a new `ready` under a known name replaces the old connection.
        worker_name: Option<String>,
    },
    /// A worker finished a job (or answered an `idle` ping).
    Completed(Completion),
    /// A worker leaves: every connection registered under its name is dropped.
    Goodbye {
        /// The worker's name.
        worker_name: Option<String>,
    },
    /// A worker extends its job's execution timeout.
    Touch {
        /// The job.
        job_id: JobRef,
        /// The new timeout from now; the job's own, or the default, when absent.
        timeout: Option<Duration>,
        /// The lease's fencing token (Baton workers send it).
        token: Option<FencingToken>,
    },
    /// A client stores a job.
    Enqueue(Box<Enqueue>),
    /// A client waits for a job to end.
    Notify(JobRef),
    /// A client reads a job.
    Fetch(JobRef),
    /// A client reads a queue's newest job.
    Last(QueueName),
    /// A client asks for the queues, workers and jobs in progress.
    Status,
    /// A client cancels a job.
    Cancel(JobRef),
    /// A client stops the broker, with the configured secret.
    Quit {
        /// The secret sent.
        token: Option<String>,
    },
    /// A command the broker does not know.
    Unknown(String),
}

/// A job to store, from an `enqueue`.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueue {
    /// The job.
    pub job: NewJob,
    /// Its execution timeout, if it sets one.
    pub timeout: Option<Duration>,
    /// Whether it set `retry_count` or `retry_delay`; if not, the broker's default policy
    /// applies.
    pub retry_given: bool,
    /// The client's trace context (`traceparent`), which the enqueue continues.
    pub trace_parent: Option<TraceParent>,
}

/// A worker's `completed`.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The job, or the `idle` ping, answered; `None` for a null id.
    pub job_id: Option<String>,
    /// Whether the job succeeded (`"status":"success"`).
    pub success: bool,
    /// The job's result, or its error.
    pub result: Value,
    /// Whether the worker waits for another job (then no reply comes until there is one).
    pub ready: bool,
    /// The lease's fencing token (Baton workers send it).
    pub token: Option<FencingToken>,
    /// For a failure: `false` to fail the job at once, skipping its remaining retries.
    pub retry: bool,
}

/// A job named in a request: the text sent, and the id it parses to, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    /// The id as sent.
    pub text: String,
    /// The id, if the text is one.
    pub id: Option<JobId>,
}

impl JobRef {
    fn new(text: String) -> Self {
        let id = text.trim().parse::<i64>().ok().map(JobId::new);
        Self { text, id }
    }
}

/// Why a message could not be read as a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("a request must be a JSON object")]
    NotAnObject,
    /// No `command` string.
    #[error("missing 'command'")]
    MissingCommand,
    /// A field missing or of the wrong type.
    #[error("{0}")]
    Field(String),
}

/// Decodes one message body.
///
/// # Errors
///
/// [`DecodeError`] saying what is wrong.
pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| DecodeError::Json(error.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let command = match fields.get("command") {
        Some(Value::String(command)) => command.as_str(),
        _ => return Err(DecodeError::MissingCommand),
    };
    let fields = Fields(&fields);
    Ok(match command {
        "ready" => Request::Ready {
            queue: fields.queue("queue")?,
            worker_name: fields.text("worker_name")?,
        },
        "completed" => Request::Completed(Completion {
            job_id: fields.id_text("job_id")?,
            success: fields
                .text("status")?
                .is_some_and(|status| status == "success"),
            result: fields.0.get("result").cloned().unwrap_or(Value::Null),
            ready: fields.flag("ready")?.unwrap_or(false),
            token: fields.token()?,
            retry: fields.flag("retry")?.unwrap_or(true),
        }),
        "goodbye" => Request::Goodbye {
            worker_name: fields.text("worker_name")?,
        },
        "touch" => Request::Touch {
            job_id: fields.job("job_id")?,
            timeout: fields.seconds("timeout")?,
            token: fields.token()?,
        },
        "enqueue" => {
            let Some(Value::Object(job)) = fields.0.get("job") else {
                return Err(DecodeError::Field("missing 'job' object".into()));
            };
            let mut enqueue = new_job(job)?;
            enqueue.trace_parent = fields.trace_parent()?;
            Request::Enqueue(Box::new(enqueue))
        }
        "notify" => Request::Notify(fields.job("job_id")?),
        "fetch" => Request::Fetch(fields.job("job_id")?),
        "last" => Request::Last(fields.queue("queue")?),
        "status" => Request::Status,
        "cancel" => Request::Cancel(fields.job("job_id")?),
        "quit" => Request::Quit {
            token: fields.text("token")?,
        },
        other => Request::Unknown(other.to_owned()),
    })
}

/// A request's fields, read with their types checked.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn text(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(DecodeError::Field(format!("'{name}' must be a string"))),
        }
    }

    /// An id sent as a string or a number.
    fn id_text(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(DecodeError::Field(format!(
                "'{name}' must be a string or a number"
            ))),
        }
    }

    fn job(&self, name: &str) -> Result<JobRef, DecodeError> {
        self.id_text(name)?
            .map(JobRef::new)
            .ok_or_else(|| DecodeError::Field(format!("missing '{name}'")))
    }

    fn queue(&self, name: &str) -> Result<QueueName, DecodeError> {
        let queue = self.text(name)?.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        QueueName::new(&queue).map_err(|error| DecodeError::Field(error.to_string()))
    }

    fn flag(&self, name: &str) -> Result<Option<bool>, DecodeError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(DecodeError::Field(format!(
                "'{name}' must be true or false"
            ))),
        }
    }

    fn token(&self) -> Result<Option<FencingToken>, DecodeError> {
        match self.0.get("token") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number
                .as_u64()
                .map(|token| Some(FencingToken::new(token)))
                .ok_or_else(|| DecodeError::Field("'token' must be a whole number".into())),
            Some(_) => Err(DecodeError::Field("'token' must be a whole number".into())),
        }
    }

    /// The W3C `traceparent` the client's enqueue continues, if it sent one.
    fn trace_parent(&self) -> Result<Option<TraceParent>, DecodeError> {
        self.text("traceparent")?
            .map(|text| {
                TraceParent::parse(&text).map_err(|error| {
                    DecodeError::Field(format!("'traceparent' is not a W3C traceparent: {error}"))
                })
            })
            .transpose()
    }

    /// A number of seconds (whole or not), at most a year.
    fn seconds(&self, name: &str) -> Result<Option<Duration>, DecodeError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number
                .as_f64()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                .filter(|seconds| *seconds <= 365.0 * 86_400.0)
                .map(|seconds| Some(Duration::from_secs_f64(seconds)))
                .ok_or_else(|| {
                    DecodeError::Field(format!("'{name}' must be from 0 to 31536000 seconds"))
                }),
            Some(_) => Err(DecodeError::Field(format!("'{name}' must be a number"))),
        }
    }
}

/// A job to store from an `enqueue`'s `job` object.
///
/// The whole object is the payload, so workers get back every field the client sent (`target`,
/// `method`, `parameters`, …). Baton reads: `queue` (default `default`), `priority` (higher
/// first), `delay` (seconds before it may run), `timeout` (seconds of execution before it is
/// failed), and the seed's retry settings `retry_count` and `retry_delay` (seconds, doubling).
fn new_job(fields: &Map<String, Value>) -> Result<Enqueue, DecodeError> {
    let read = Fields(fields);
    let queue = read.queue("queue")?;
    let mut payload = fields.clone();
    payload.insert("queue".into(), Value::String(queue.as_str().to_owned()));
    let field = |error: baton_core::Error| DecodeError::Field(error.to_string());
    let mut job = NewJob::new(queue, Value::Object(payload)).map_err(field)?;
    if let Some(priority) = fields.get("priority").filter(|value| !value.is_null()) {
        let priority = priority
            .as_i64()
            .and_then(|priority| i32::try_from(priority).ok())
            .ok_or_else(|| DecodeError::Field("'priority' must be a 32-bit integer".into()))?;
        job = job.with_priority(Priority(priority));
    }
    if let Some(delay) = read.seconds("delay")? {
        job = job.with_delay(delay);
    }
    let retries = match fields.get("retry_count") {
        None | Some(Value::Null) => 0,
        Some(count) => count
            .as_u64()
            .and_then(|count| u32::try_from(count).ok())
            .filter(|count| *count < 1000)
            .ok_or_else(|| DecodeError::Field("'retry_count' must be from 0 to 999".into()))?,
    };
    let delay = read.seconds("retry_delay")?;
    let retry_given = fields.get("retry_count").is_some_and(|v| !v.is_null()) || delay.is_some();
    if retry_given {
        let delay = delay.unwrap_or_default();
        let policy = if retries > 0 && !delay.is_zero() {
            let mut policy = RetryPolicy::exponential(retries + 1, delay);
            policy.max_backoff_ms = policy.max_backoff_ms.max(policy.initial_backoff_ms);
            policy
        } else {
            RetryPolicy::never()
        };
        job = job.with_retry(policy).map_err(field)?;
    }
    let timeout = read
        .seconds("timeout")?
        .filter(|timeout| !timeout.is_zero());
    if timeout.is_some_and(|timeout| timeout > baton_core::MAX_TTL) {
        return Err(DecodeError::Field(format!(
            "'timeout' must be at most {} seconds",
            baton_core::MAX_TTL.as_secs()
        )));
    }
    Ok(Enqueue {
        job,
        timeout,
        retry_given,
        trace_parent: None,
    })
}

/// A job's execution timeout, as its payload sets it.
pub fn job_timeout(job: &Job) -> Option<Duration> {
    let Value::Object(fields) = &job.payload else {
        return None;
    };
    Fields(fields)
        .seconds("timeout")
        .ok()
        .flatten()
        .filter(|timeout| !timeout.is_zero())
}

/// A state's name on the wire: the seed's strings, and `canceled` for Baton's extra state.
pub fn status_string(state: JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running => "in progress",
        JobState::Succeeded => "completed",
        JobState::Failed => "failed",
        JobState::Canceled => "canceled",
    }
}

/// A job as clients see it: its payload's fields, then `id`, `queue`, `status`, `result` and
/// Baton's own (`state`, `attempts`, `priority`, `created_at`, `finished_at`, `error`).
pub fn job_json(job: &Job) -> Value {
    let mut fields = match &job.payload {
        Value::Object(fields) => fields.clone(),
        other => Map::from_iter([("payload".to_owned(), other.clone())]),
    };
    let mut set = |name: &str, value: Value| {
        fields.insert(name.to_owned(), value);
    };
    set("id", Value::String(job.id.to_string()));
    set("queue", Value::String(job.queue.as_str().to_owned()));
    set("status", Value::String(status_string(job.state).to_owned()));
    set("state", Value::String(job.state.as_str().to_owned()));
    set(
        "result",
        match (&job.result, &job.error) {
            (Some(result), _) => result.clone(),
            (None, Some(error)) => Value::String(error.clone()),
            (None, None) => Value::Null,
        },
    );
    set(
        "error",
        job.error.clone().map_or(Value::Null, Value::String),
    );
    set("attempts", json!(job.attempts));
    set("priority", json!(job.priority.0));
    set("created_at", json!(job.created_at.as_millis()));
    set(
        "finished_at",
        job.finished_at
            .map_or(Value::Null, |at| json!(at.as_millis())),
    );
    Value::Object(fields)
}

/// The message that hands a job to a worker: its payload's fields, `command: "job"`,
/// `job_id`, and Baton's `token`, `attempt`, `timeout` (seconds) and, when the job carries one,
/// `traceparent` (the W3C trace context of the span that enqueued it).
pub fn job_message(job: &Job, token: FencingToken, timeout: Duration) -> Value {
    let mut fields = match &job.payload {
        Value::Object(fields) => fields.clone(),
        other => Map::from_iter([("payload".to_owned(), other.clone())]),
    };
    fields.insert("command".into(), json!("job"));
    fields.insert("job_id".into(), json!(job.id.to_string()));
    fields.insert("token".into(), json!(token.get()));
    fields.insert("attempt".into(), json!(job.attempts));
    fields.insert("timeout".into(), json!(timeout.as_secs_f64()));
    if let Some(parent) = &job.trace_parent {
        fields.insert("traceparent".into(), json!(parent.as_str()));
    }
    Value::Object(fields)
}

/// `{"status":"error","message":…}`.
pub fn error_reply(message: impl std::fmt::Display) -> Value {
    json!({"status": "error", "message": message.to_string()})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending job as a backend would return it.
    fn stored(payload: Value, trace_parent: Option<TraceParent>) -> Job {
        Job {
            id: JobId::new(1),
            queue: QueueName::new(DEFAULT_QUEUE).unwrap(),
            payload,
            priority: Priority::default(),
            state: JobState::Pending,
            attempts: 0,
            retry: RetryPolicy::default(),
            created_at: baton_core::Timestamp::EPOCH,
            run_at: baton_core::Timestamp::EPOCH,
            finished_at: None,
            result: None,
            error: None,
            lease: None,
            history: Vec::new(),
            trace_parent,
        }
    }

    #[test]
    fn seed_messages_decode() {
        let ready = decode(br#"{"command":"ready","queue":"q","worker_name":"ruby:h:1:2"}"#);
        assert_eq!(
            ready,
            Ok(Request::Ready {
                queue: QueueName::new("q").unwrap(),
                worker_name: Some("ruby:h:1:2".into())
            })
        );
        let idle = decode(
            br#"{"command":"completed","ready":true,"job_id":null,"result":"idle, doing nothing","status":"success"}"#,
        );
        let Ok(Request::Completed(idle)) = idle else {
            panic!("{idle:?}");
        };
        assert!(idle.ready && idle.success && idle.job_id.is_none());
        assert_eq!(
            decode(br#"{"parameters":[],"command":"status"}"#),
            Ok(Request::Status)
        );
        let Ok(Request::Touch {
            job_id, timeout, ..
        }) = decode(br#"{"command":"touch","job_id":"12"}"#)
        else {
            panic!("touch");
        };
        assert_eq!((job_id.id, timeout), (Some(JobId::new(12)), None));
        assert_eq!(
            decode(br#"{"command":"frobnicate"}"#),
            Ok(Request::Unknown("frobnicate".into()))
        );
    }

    #[test]
    fn an_enqueued_job_keeps_every_field_and_maps_the_seed_retry_settings() {
        let Ok(Request::Enqueue(enqueue)) = decode(
            br#"{"job":{"target":"T","method":"m","parameters":[1],"retry_count":2,"retry_delay":5,"timeout":60},"command":"enqueue"}"#,
        ) else {
            panic!("enqueue");
        };
        let Enqueue {
            job,
            timeout,
            retry_given,
            trace_parent,
        } = *enqueue;
        assert_eq!(trace_parent, None);
        assert!(retry_given);
        assert_eq!(job.queue().as_str(), DEFAULT_QUEUE);
        assert_eq!(job.payload()["target"], "T");
        assert_eq!(job.payload()["parameters"], json!([1]));
        assert_eq!(job.retry().max_attempts, 3);
        assert_eq!(job.retry().initial_backoff_ms, 5000);
        assert_eq!(job.retry().base, 2.0);
        assert_eq!(timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn an_enqueue_carries_the_clients_trace_parent_to_the_job_and_its_worker() {
        const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let body = format!(r#"{{"command":"enqueue","job":{{"x":1}},"traceparent":"{PARENT}"}}"#);
        let Ok(Request::Enqueue(enqueue)) = decode(body.as_bytes()) else {
            panic!("enqueue");
        };
        assert_eq!(
            enqueue.trace_parent.as_ref().map(TraceParent::as_str),
            Some(PARENT)
        );
        let job = stored(enqueue.job.payload().clone(), enqueue.trace_parent.clone());
        let message = job_message(&job, FencingToken::new(3), Duration::from_secs(30));
        assert_eq!(message["traceparent"], PARENT);
        assert_eq!(message["x"], 1);
        let untraced = job_message(
            &stored(json!({}), None),
            FencingToken::new(3),
            Duration::ZERO,
        );
        assert!(untraced.get("traceparent").is_none());
    }

    #[test]
    fn wrong_types_are_errors_not_defaults() {
        for body in [
            &br#"{"command":"ready","queue":5}"#[..],
            br#"{"command":"touch"}"#,
            br#"{"command":"touch","job_id":"1","timeout":-1}"#,
            br#"{"command":"completed","token":"x"}"#,
            br#"{"command":"enqueue","job":[]}"#,
            br#"{"command":"enqueue","job":{"priority":1e12}}"#,
            br#"{"command":"enqueue","job":{"queue":""}}"#,
            br#"{"command":"enqueue","job":{},"traceparent":"00-00-00-01"}"#,
            br#"{"command":"enqueue","job":{},"traceparent":1}"#,
            br#"{"command":7}"#,
            br#"[]"#,
            b"\xff",
        ] {
            assert!(decode(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
