//! The backend names a pool uses, and what its jobs carry.

use baton_core::{JobId, LockName, PoolName, QueueName, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{OnComplete, RetryBehavior};

/// Every queue, lock and claim-pool name of one work pool.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pool: PoolName,
    /// The jobs themselves.
    pub(crate) work: QueueName,
    /// Completion records: one per way a job can end, each naming the job.
    pub(crate) completions: QueueName,
    /// Settings records: the newest is the pool's setting.
    pub(crate) settings: QueueName,
    /// Cancel-all records: the newest holds the id below which every job is canceled.
    pub(crate) cancel_all: QueueName,
}

impl Names {
    pub(crate) fn new(pool: &PoolName) -> Result<Self> {
        let base = format!("workpool:{pool}");
        Ok(Self {
            pool: pool.clone(),
            work: QueueName::new(&base)?,
            completions: QueueName::new(format!("{base}:completions"))?,
            settings: QueueName::new(format!("{base}:settings"))?,
            cancel_all: QueueName::new(format!("{base}:cancel-all"))?,
        })
    }

    /// Parallelism slot `index`: a job runs only while its member holds one below the limit.
    pub(crate) fn slot(&self, index: usize) -> Result<LockName> {
        LockName::new(format!("workpool:{}:slot:{index}", self.pool))
    }

    /// Held while a job's completion callback runs, so that two records of it never run it at
    /// the same time.
    pub(crate) fn completion_lock(&self, job: JobId) -> Result<LockName> {
        LockName::new(format!("workpool:{}:completing:{job}", self.pool))
    }

    /// Holds the item `done` once a job's completion callback has been recorded.
    pub(crate) fn completion_record(&self, job: JobId) -> Result<PoolName> {
        PoolName::new(format!("workpool:{}:completed:{job}", self.pool))
    }
}

/// What a pool job carries in its payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WorkPayload {
    /// The registered handler to run.
    pub(crate) handler: String,
    /// Its argument.
    pub(crate) args: Value,
    /// A name for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Attempts in all.
    pub(crate) max_attempts: u32,
    /// The completion callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) on_complete: Option<OnComplete>,
}

impl WorkPayload {
    pub(crate) fn new(
        handler: String,
        args: Value,
        name: Option<String>,
        retry: &RetryBehavior,
        on_complete: Option<OnComplete>,
    ) -> Self {
        Self {
            handler,
            args,
            name,
            max_attempts: retry.max_attempts,
            on_complete,
        }
    }
}

/// A completion record's payload: the job whose end it reports.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct CompletionPayload {
    pub(crate) job: JobId,
}

/// A settings record's payload.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct SettingsPayload {
    pub(crate) max_parallelism: usize,
}

/// A cancel-all record's payload: every job with an id up to `through` is canceled.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct CancelAllPayload {
    pub(crate) through: JobId,
}
