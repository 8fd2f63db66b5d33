//! The job row every SQL backend reads, and the JSON it writes.
//!
//! A job's attempt history is a JSON array of objects, one per attempt, oldest first:
//!
//! ```json
//! {"number": 1, "owner": "host-12", "started_at": 1735689600000, "finished_at": null}
//! {"number": 1, "owner": "host-12", "started_at": 1735689600000, "finished_at": 1735689601000,
//!  "outcome": "failed", "error": "timeout"}
//! ```
//!
//! `outcome` is one of `succeeded`, `failed` (with `error`), `expired`, `canceled`, and is absent
//! while the attempt runs. Backends may append and finish attempts in SQL (`jsonb_set`,
//! `JSON_ARRAY_APPEND`, `json_insert`) as long as they write this shape.

use baton_core::{
    Attempt, Error, FencingToken, Job, JobId, JobState, Lease, Owner, Priority, QueueName, Result,
    RetryPolicy, Timestamp, TraceParent,
};
use serde_json::Value;

/// A row of the jobs table, with JSON columns as text and times as milliseconds.
///
/// Select the columns under these names (PostgreSQL casts `jsonb` columns with `::text`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRow {
    /// `BIGINT` id.
    pub id: i64,
    /// Queue name.
    pub queue: String,
    /// Payload, JSON text.
    pub payload: String,
    /// `INT` priority.
    pub priority: i32,
    /// State name: `pending`, `running`, `succeeded`, `failed`, `canceled`.
    pub state: String,
    /// `INT` attempts started.
    pub attempts: i32,
    /// Retry policy, JSON text.
    pub retry: String,
    /// When it was enqueued, ms.
    pub created_at: i64,
    /// When it is next due, ms.
    pub run_at: i64,
    /// When it became terminal, ms.
    pub finished_at: Option<i64>,
    /// Result, JSON text.
    pub result: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// Holder of the current reservation.
    pub lease_owner: Option<String>,
    /// The last fencing token granted for this job (0 before the first reservation).
    pub lease_token: i64,
    /// When the current reservation expires, ms.
    pub lease_expires_at: Option<i64>,
    /// Attempt history, JSON text (see the module docs).
    pub history: String,
    /// The W3C traceparent of the span that enqueued the job, if any.
    pub trace_parent: Option<String>,
}

impl JobRow {
    /// The job this row stores.
    ///
    /// # Errors
    ///
    /// A permanent `Backend` error naming the job and the column if the row is corrupt.
    pub fn into_job(self) -> Result<Job> {
        let id = JobId::new(self.id);
        let corrupt = |column: &str, error: &dyn std::fmt::Display| Error::Backend {
            message: format!("job {id} has a corrupt {column} column: {error}"),
            transient: false,
            source: None,
        };
        let state: JobState = self.state.parse().map_err(|e| corrupt("state", &e))?;
        let lease = match (state, self.lease_owner, self.lease_expires_at) {
            (JobState::Running, Some(owner), Some(expires_at)) => Some(Lease::granted(
                Owner::new(owner).map_err(|e| corrupt("lease_owner", &e))?,
                FencingToken::new(
                    u64::try_from(self.lease_token).map_err(|e| corrupt("lease_token", &e))?,
                ),
                Timestamp::from_millis(expires_at),
            )),
            _ => None,
        };
        Ok(Job {
            id,
            queue: QueueName::new(self.queue).map_err(|e| corrupt("queue", &e))?,
            payload: serde_json::from_str(&self.payload).map_err(|e| corrupt("payload", &e))?,
            priority: Priority(self.priority),
            state,
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt("attempts", &e))?,
            retry: serde_json::from_str::<RetryPolicy>(&self.retry)
                .map_err(|e| corrupt("retry", &e))?,
            created_at: Timestamp::from_millis(self.created_at),
            run_at: Timestamp::from_millis(self.run_at),
            finished_at: self.finished_at.map(Timestamp::from_millis),
            result: self
                .result
                .map(|text| serde_json::from_str::<Value>(&text))
                .transpose()
                .map_err(|e| corrupt("result", &e))?,
            error: self.error,
            lease,
            history: serde_json::from_str::<Vec<Attempt>>(&self.history)
                .map_err(|e| corrupt("history", &e))?,
            trace_parent: self
                .trace_parent
                .map(|text| TraceParent::parse(&text))
                .transpose()
                .map_err(|e| corrupt("trace_parent", &e))?,
        })
    }
}

/// `value` as JSON text.
pub fn encode_json(value: &Value) -> String {
    value.to_string()
}

/// `policy` as JSON text.
pub fn encode_retry(policy: &RetryPolicy) -> String {
    serde_json::to_string(policy).unwrap_or_else(|_| "{}".to_owned())
}

/// `history` as JSON text.
pub fn encode_history(history: &[Attempt]) -> String {
    serde_json::to_string(history).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use baton_core::AttemptOutcome;

    use super::*;

    fn row() -> JobRow {
        JobRow {
            id: 7,
            queue: "emails".to_owned(),
            payload: r#"{"to":"a@b.c"}"#.to_owned(),
            priority: 3,
            state: "running".to_owned(),
            attempts: 2,
            retry: encode_retry(&RetryPolicy::default()),
            created_at: 1_000,
            run_at: 2_000,
            finished_at: None,
            result: None,
            error: Some("boom".to_owned()),
            lease_owner: Some("w-1".to_owned()),
            lease_token: 2,
            lease_expires_at: Some(9_000),
            history: r#"[
                {"number":1,"owner":"w-0","started_at":1000,"finished_at":1500,"outcome":"failed","error":"boom"},
                {"number":2,"owner":"w-1","started_at":2000,"finished_at":null}
            ]"#
            .to_owned(),
            trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        }
    }

    #[test]
    fn a_running_row_decodes_with_its_lease_and_history() {
        let job = row().into_job().unwrap();
        assert_eq!(job.state, JobState::Running);
        let lease = job.lease.unwrap();
        assert_eq!(lease.token(), FencingToken::new(2));
        assert_eq!(lease.owner().as_str(), "w-1");
        assert_eq!(job.history.len(), 2);
        assert_eq!(
            job.history[0].outcome,
            Some(AttemptOutcome::Failed {
                error: "boom".to_owned()
            })
        );
        assert_eq!(job.history[1].outcome, None);
        assert_eq!(job.history[1].finished_at, None);
    }

    #[test]
    fn the_history_shape_round_trips_through_the_core_types() {
        let job = row().into_job().unwrap();
        let text = encode_history(&job.history);
        let again: Vec<Attempt> = serde_json::from_str(&text).unwrap();
        assert_eq!(again, job.history);
        assert!(
            text.contains(r#""outcome":"failed","error":"boom""#),
            "{text}"
        );
    }

    #[test]
    fn a_row_decodes_its_trace_parent_or_none() {
        let job = row().into_job().unwrap();
        assert_eq!(
            job.trace_parent.map(String::from).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let mut without = row();
        without.trace_parent = None;
        assert_eq!(without.into_job().unwrap().trace_parent, None);
        let mut bad = row();
        bad.trace_parent = Some("junk".to_owned());
        let error = bad.into_job().unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("trace_parent"), "{error}");
    }

    #[test]
    fn a_corrupt_row_is_a_permanent_backend_error_naming_the_column() {
        let mut bad = row();
        bad.state = "sleeping".to_owned();
        let error = bad.into_job().unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("state"), "{error}");
    }
}
