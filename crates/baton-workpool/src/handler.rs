//! What handlers receive and return: [`JobContext`], [`HandlerError`], [`Completion`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use baton_core::{FencingToken, JobId};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

/// Why a handler failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    permanent: bool,
}

impl HandlerError {
    /// A failure worth retrying, by the job's retry behaviour.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            permanent: false,
        }
    }

    /// A failure that no retry will fix: the job fails now, skipping its remaining attempts.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            permanent: true,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the failure skips remaining attempts.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::retryable(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::retryable(message)
    }
}

/// The cancellation signal of a running job: set once, when the job is canceled.
#[derive(Clone, Debug)]
pub struct CancelSignal {
    receiver: watch::Receiver<bool>,
}

impl CancelSignal {
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (sender, receiver) = watch::channel(false);
        (sender, Self { receiver })
    }

    /// Whether the job has been canceled.
    pub fn is_canceled(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves when the job is canceled (never, if it is not).
    pub async fn canceled(&self) {
        let mut receiver = self.receiver.clone();
        if receiver.wait_for(|canceled| *canceled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What a handler knows about the attempt it runs.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job.
    pub job: JobId,
    /// The job's name for logs, if it has one.
    pub name: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The fencing token of this attempt's reservation: hand it to a downstream resource so
    /// that it can refuse writes from an attempt that was superseded.
    pub token: FencingToken,
    /// Set when the job is canceled while it runs.
    pub cancel: CancelSignal,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The handler returned this value.
    Succeeded {
        /// The handler's result.
        result: Value,
    },
    /// The last attempt failed (or a permanent failure ended the retries).
    Failed {
        /// The last error.
        error: String,
    },
    /// The job was canceled.
    Canceled,
}

/// What a completion handler is told about a finished job.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The job that ended.
    pub job: JobId,
    /// The job's name, if it had one.
    pub name: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// How many attempts it made.
    pub attempts: u32,
    /// The value given with the callback at enqueue time.
    pub context: Value,
    /// The fencing token of this call's reservation: a call is repeated only if the member
    /// running it died or lost its lease before recording it, and a downstream resource can
    /// use the job id and this token to tell.
    pub token: FencingToken,
}

pub(crate) type HandlerFn =
    Arc<dyn Fn(JobContext, Value) -> BoxFuture<'static, Result<Value, HandlerError>> + Send + Sync>;

pub(crate) type CompletionFn =
    Arc<dyn Fn(Completion) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

pub(crate) fn handler_fn<F, Fut>(handler: F) -> HandlerFn
where
    F: Fn(JobContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    Arc::new(
        move |context, args| -> Pin<Box<dyn Future<Output = _> + Send>> {
            Box::pin(handler(context, args))
        },
    )
}

pub(crate) fn completion_fn<F, Fut>(handler: F) -> CompletionFn
where
    F: Fn(Completion) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(
        move |completion| -> Pin<Box<dyn Future<Output = _> + Send>> {
            Box::pin(handler(completion))
        },
    )
}
