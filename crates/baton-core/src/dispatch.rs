//! The [`Dispatch`] trait: wake-ups for idle workers and job-state notifications.

use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;

use crate::{JobEvent, JobId, QueueName, Result};

/// A stream of queue names, one item each time a queue is woken.
pub type WakeStream = Pin<Box<dyn Stream<Item = QueueName> + Send>>;

/// A stream of a job's state changes, ending after its terminal state.
pub type EventStream = Pin<Box<dyn Stream<Item = JobEvent> + Send>>;

/// Wake-ups and notifications, so that no worker or waiter has to poll.
///
/// To ensure correctness, an implementation must:
/// - deliver a wake to every stream from [`wakeups`](Dispatch::wakeups) that names the queue and
///   was open when the wake was sent; a stream that fell behind yields a wake rather than
///   silently dropping one, since a spurious wake costs one empty `reserve` and a lost one
///   strands a worker;
/// - deliver to every stream from [`subscribe`](Dispatch::subscribe) every event of its job
///   published after the call returned, in order, and end the stream after a terminal state.
#[async_trait]
pub trait Dispatch: Send + Sync {
    /// Wakes every worker waiting on `queue`.
    async fn wake(&self, queue: &QueueName) -> Result<()>;

    /// A stream that yields each time one of `queues` is woken. Open it before looking for
    /// work, so that a wake between the look and the wait is not missed.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for no queues.
    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream>;

    /// Publishes a job's state change to its subscribers.
    async fn publish(&self, event: &JobEvent) -> Result<()>;

    /// A stream of the state changes of job `id` from now on. Subscribe before reading the
    /// job's current state, so that no change falls between the two. The stream of a job that
    /// is already terminal, or does not exist, yields nothing: the caller checks with
    /// [`Queue::get`](crate::Queue::get) after subscribing.
    async fn subscribe(&self, id: JobId) -> Result<EventStream>;
}
