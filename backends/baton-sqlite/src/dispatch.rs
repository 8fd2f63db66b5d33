//! [`Dispatch`] on SQLite: this process's hub at once; other processes through the `events`
//! table, read by each backend's [`EventPoller`](baton_sql::EventPoller).
//!
//! Job state changes write their events rows themselves. A [`wake`](Dispatch::wake) made
//! through this trait is carried as a `pending` row for job 0 (which no one can subscribe to,
//! ids starting at 1), which wakes the queue in every other process.

use async_trait::async_trait;
use baton_core::{Dispatch, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};
use baton_sql::from_sqlx;

use crate::SqliteBackend;

impl SqliteBackend {
    /// Writes `event` for the other processes, outside any transaction.
    async fn send_to_others(&self, event: &JobEvent) -> Result<()> {
        sqlx::query(self.sql().insert_event.clone())
            .bind(self.inner.origin.clone())
            .bind(event.job.get())
            .bind(event.queue.as_str().to_owned())
            .bind(event.state.as_str())
            .bind(i64::from(event.attempts))
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }
}

#[async_trait]
impl Dispatch for SqliteBackend {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.inner.hub.wake(queue);
        self.send_to_others(&baton_sql::wake_event(queue)).await
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        self.inner.hub.wakeups(queues)
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.inner.hub.publish(event);
        self.send_to_others(event).await
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        Ok(self.inner.hub.subscribe(id))
    }
}
