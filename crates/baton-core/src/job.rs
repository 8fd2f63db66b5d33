//! Jobs: what is enqueued, what a worker reserves, and what is recorded of each attempt.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Lease, Owner, QueueName, Result, RetryPolicy, Timestamp};

/// The largest JSON payload or result a job may carry, in bytes once serialized.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Checks that `value` serializes to at most [`MAX_PAYLOAD_BYTES`].
///
/// # Errors
///
/// [`Error::InvalidInput`] naming `what` and the sizes.
pub fn check_json_size(what: &str, value: &Value) -> Result<()> {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value)
        .map_err(|e| Error::invalid(format!("{what} is not serializable: {e}")))?;
    if counter.0 > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes, more than the {MAX_PAYLOAD_BYTES} allowed",
            counter.0
        )));
    }
    Ok(())
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A job's id, assigned by the backend; larger ids were enqueued later.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(i64);

impl JobId {
    /// The id with the given value. Backends call this when they assign ids.
    pub const fn new(value: i64) -> Self {
        Self(value)
    }

    /// The id's value.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The [`Error::LeaseLost`] for a lease on this job that is no longer current.
    pub fn lease_lost(self) -> Error {
        Error::lease_lost(format!("job {self}"))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or_else(|| Error::invalid(format!("job id {s:?} is not a positive integer")))
    }
}

/// Where a job is in its life. Every job ends in exactly one terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run: now, or at its `run_at` time (a delayed job or a retry).
    Pending,
    /// Reserved by a worker whose lease has not ended.
    Running,
    /// Finished successfully. Terminal.
    Succeeded,
    /// Failed its last allowed attempt, or failed permanently. Terminal.
    Failed,
    /// Canceled before it finished. Terminal.
    Canceled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
    ];

    /// Whether the job will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// The state's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown job state {s:?}")))
    }
}

/// A job's priority: higher runs first among jobs that are due. The default is 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Priority(pub i32);

/// A validated W3C Trace Context `traceparent` header value, such as
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
///
/// Version `00` only: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase, with
/// neither id all zeros. Baton only stores it, so a job's span can be a child of the span that
/// enqueued it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent(String);

impl TraceParent {
    /// Checks `value` and keeps it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if `value` is not a version `00` traceparent in lowercase hex, or
    /// its trace id or span id is all zeros.
    pub fn parse(value: &str) -> Result<Self> {
        let fields: Vec<&str> = value.splitn(5, '-').collect();
        let [version, trace_id, span_id, flags] = fields[..] else {
            return Err(Error::invalid(format!(
                "traceparent {value:?} is not version-traceid-spanid-flags"
            )));
        };
        if version != "00" {
            return Err(Error::invalid(format!(
                "traceparent {value:?} has version {version:?}, not \"00\""
            )));
        }
        for (what, field, len) in [
            ("trace id", trace_id, 32),
            ("span id", span_id, 16),
            ("flags", flags, 2),
        ] {
            if field.len() != len || !field.bytes().all(is_lowercase_hex) {
                return Err(Error::invalid(format!(
                    "traceparent {value:?} has a {what} that is not {len} lowercase hex digits"
                )));
            }
        }
        for (what, field) in [("trace id", trace_id), ("span id", span_id)] {
            if field.bytes().all(|b| b == b'0') {
                return Err(Error::invalid(format!(
                    "traceparent {value:?} has an all-zero {what}"
                )));
            }
        }
        Ok(Self(value.to_owned()))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_lowercase_hex(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'f')
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TraceParent {
    type Error = Error;

    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)?;
        Ok(Self(value))
    }
}

impl From<TraceParent> for String {
    fn from(trace_parent: TraceParent) -> Self {
        trace_parent.0
    }
}

/// A job to enqueue, built with [`NewJob::new`] and its `with_*` methods.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewJob {
    queue: QueueName,
    payload: Value,
    priority: Priority,
    delay: Duration,
    retry: RetryPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_parent: Option<TraceParent>,
}

impl NewJob {
    /// A job for `queue` carrying `payload`, due now, at the default priority and retry policy.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the payload is larger than [`MAX_PAYLOAD_BYTES`].
    pub fn new(queue: QueueName, payload: Value) -> Result<Self> {
        check_json_size("payload", &payload)?;
        Ok(Self {
            queue,
            payload,
            priority: Priority::default(),
            delay: Duration::ZERO,
            retry: RetryPolicy::default(),
            trace_parent: None,
        })
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Makes the job due `delay` after it is enqueued, by the backend's clock.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the retry policy.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the policy does not [validate](RetryPolicy::validate).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Result<Self> {
        retry.validate()?;
        self.retry = retry;
        Ok(self)
    }

    /// Records the trace context of the span enqueueing the job, for the span that runs it.
    pub fn with_trace_parent(mut self, trace_parent: TraceParent) -> Self {
        self.trace_parent = Some(trace_parent);
        self
    }

    /// The queue the job goes to.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// The job's payload.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// The job's priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// How long after enqueueing the job becomes due.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The job's retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The trace context of the span enqueueing the job, if any.
    pub fn trace_parent(&self) -> Option<&TraceParent> {
        self.trace_parent.as_ref()
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The worker completed the job.
    Succeeded,
    /// The worker reported a failure.
    Failed {
        /// The worker's error message.
        error: String,
    },
    /// The worker's lease ran out before it reported (it died, hung or was cut off).
    Expired,
    /// The job was canceled while the attempt ran.
    Canceled,
}

/// The record of one attempt at a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// Who ran it.
    pub owner: Owner,
    /// When it was reserved.
    pub started_at: Timestamp,
    /// When it ended; `None` while it runs.
    pub finished_at: Option<Timestamp>,
    /// How it ended; `None` while it runs.
    #[serde(flatten)]
    pub outcome: Option<AttemptOutcome>,
}

/// A snapshot of a job, as stored by the backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: QueueName,
    /// What the worker is given.
    pub payload: Value,
    /// Higher runs first.
    pub priority: Priority,
    /// Where the job is in its life.
    pub state: JobState,
    /// How many attempts have started.
    pub attempts: u32,
    /// How it is retried.
    pub retry: RetryPolicy,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it is (or was) next due.
    pub run_at: Timestamp,
    /// When it reached its terminal state.
    pub finished_at: Option<Timestamp>,
    /// What the worker returned on success.
    pub result: Option<Value>,
    /// The last error reported or recorded.
    pub error: Option<String>,
    /// The current reservation, while running.
    pub lease: Option<Lease>,
    /// Every attempt, oldest first.
    pub history: Vec<Attempt>,
    /// The trace context of the span that enqueued it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<TraceParent>,
}

impl Job {
    /// The event announcing this job's current state.
    pub fn event(&self) -> JobEvent {
        JobEvent {
            job: self.id,
            queue: self.queue.clone(),
            state: self.state,
            attempts: self.attempts,
        }
    }

    /// After a failed attempt, how long until the next one, or `None` if the job must fail now:
    /// when `retry` is [`Retry::Never`] or the job's policy allows no more attempts.
    pub fn retry_delay(&self, retry: Retry) -> Option<Duration> {
        if !self.retry.allows_another(self.attempts) {
            return None;
        }
        match retry {
            Retry::ByPolicy => Some(self.retry.delay_after(self.attempts)),
            Retry::After(delay) => Some(delay),
            Retry::Never => None,
        }
    }
}

/// A worker's hold on a running job: present it to complete, fail or touch the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLease {
    /// The job held.
    pub job: JobId,
    /// The grant: owner, fencing token and expiry.
    pub lease: Lease,
}

/// A job handed to a worker by [`Queue::reserve`](crate::Queue::reserve).
#[derive(Clone, Debug, PartialEq)]
pub struct Reserved {
    /// The job, in the running state, its new attempt already counted.
    pub job: Job,
    /// The worker's hold on it.
    pub lease: JobLease,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retry {
    /// Retry after the delay of the job's policy, if it allows another attempt.
    #[default]
    ByPolicy,
    /// Retry after this delay, if the job's policy allows another attempt.
    After(Duration),
    /// Fail permanently now, whatever attempts remain.
    Never,
}

/// How many jobs of a queue are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Waiting to run, now or later.
    pub pending: u64,
    /// Reserved by a worker.
    pub running: u64,
    /// Finished successfully and not yet purged.
    pub succeeded: u64,
    /// Failed and not yet purged.
    pub failed: u64,
    /// Canceled and not yet purged.
    pub canceled: u64,
}

impl QueueCounts {
    /// The count for `state`.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Pending => self.pending,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Failed => self.failed,
            JobState::Canceled => self.canceled,
        }
    }

    /// A mutable reference to the count for `state`.
    pub fn get_mut(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Pending => &mut self.pending,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Canceled => &mut self.canceled,
        }
    }

    /// Jobs in every state.
    pub fn total(&self) -> u64 {
        JobState::ALL.into_iter().map(|s| self.get(s)).sum()
    }
}

/// A change of a job's state, as published by [`Dispatch`](crate::Dispatch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job that changed.
    pub job: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Its new state.
    pub state: JobState,
    /// How many attempts it had started at the change.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_payloads_are_refused() {
        let queue = QueueName::new("q").unwrap();
        let big = Value::String("x".repeat(MAX_PAYLOAD_BYTES));
        assert!(matches!(
            NewJob::new(queue.clone(), big),
            Err(Error::InvalidInput(_))
        ));
        let fits = Value::String("x".repeat(MAX_PAYLOAD_BYTES - 2));
        assert!(NewJob::new(queue, fits).is_ok());
    }

    #[test]
    fn job_ids_parse_only_from_positive_integers() {
        assert_eq!("42".parse::<JobId>().unwrap(), JobId::new(42));
        for bad in ["", "0", "-1", "x", "1.5"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }

    #[test]
    fn retry_delay_follows_the_decision_and_the_attempt_limit() {
        let queue = QueueName::new("q").unwrap();
        let mut job = Job {
            id: JobId::new(1),
            queue,
            payload: Value::Null,
            priority: Priority::default(),
            state: JobState::Running,
            attempts: 1,
            retry: RetryPolicy::exponential(2, Duration::from_millis(100)),
            created_at: Timestamp::EPOCH,
            run_at: Timestamp::EPOCH,
            finished_at: None,
            result: None,
            error: None,
            lease: None,
            history: Vec::new(),
            trace_parent: None,
        };
        assert_eq!(
            job.retry_delay(Retry::ByPolicy),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            job.retry_delay(Retry::After(Duration::ZERO)),
            Some(Duration::ZERO)
        );
        assert_eq!(job.retry_delay(Retry::Never), None);
        job.attempts = 2;
        assert_eq!(job.retry_delay(Retry::ByPolicy), None);
        assert_eq!(job.retry_delay(Retry::After(Duration::ZERO)), None);
    }

    const TRACE_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn trace_parents_accept_w3c_version_00_values() {
        let parsed = TraceParent::parse(TRACE_PARENT).unwrap();
        assert_eq!(parsed.as_str(), TRACE_PARENT);
        assert_eq!(parsed.to_string(), TRACE_PARENT);
        assert_eq!(TRACE_PARENT.parse::<TraceParent>().unwrap(), parsed);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(TraceParent::parse(unsampled).is_ok());
    }

    #[test]
    fn trace_parents_refuse_anything_else() {
        for bad in [
            "",
            "junk",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert!(
                matches!(TraceParent::parse(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trace_parents_are_plain_strings_in_json_and_checked_when_read() {
        let parsed = TraceParent::parse(TRACE_PARENT).unwrap();
        let json = serde_json::to_string(&parsed).unwrap();
        assert_eq!(json, format!("\"{TRACE_PARENT}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), parsed);
        assert!(serde_json::from_str::<TraceParent>("\"00-junk\"").is_err());
        assert!(serde_json::from_str::<TraceParent>("42").is_err());
    }

    #[test]
    fn new_jobs_carry_a_trace_parent_only_when_given_one() {
        let queue = QueueName::new("q").unwrap();
        let job = NewJob::new(queue, Value::Null).unwrap();
        assert_eq!(job.trace_parent(), None);
        let parent = TraceParent::parse(TRACE_PARENT).unwrap();
        let job = job.with_trace_parent(parent.clone());
        assert_eq!(job.trace_parent(), Some(&parent));
    }

    #[test]
    fn only_finished_states_are_terminal() {
        let terminal: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [JobState::Succeeded, JobState::Failed, JobState::Canceled]
        );
    }
}
