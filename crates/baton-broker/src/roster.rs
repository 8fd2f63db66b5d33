//! What a broker knows of its workers right now, for people and dashboards
//! ([`BrokerHandle::workers`](crate::BrokerHandle::workers)).

use baton_core::{JobId, QueueName, Timestamp};
use serde::{Deserialize, Serialize};

/// One worker connected to the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The name the worker gave in `ready`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its connection's identity on the broker's socket, in hex.
    pub peer: String,
    /// The queue it takes jobs from.
    pub queue: QueueName,
    /// Whether it waits for a job or runs one.
    pub state: WorkerActivity,
    /// The job it runs, while it runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// When it said `ready` on this connection, by the broker's clock.
    pub connected: Timestamp,
    /// When the broker last heard from it: any message, a job's `touch` or a ping's answer.
    pub last_seen: Timestamp,
}

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerActivity {
    /// Waiting for a job (including while it answers an idle ping).
    Waiting,
    /// Running a job.
    Running,
}

impl WorkerActivity {
    /// `waiting` or `running`, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
        }
    }
}
