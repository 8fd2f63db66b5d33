//! [`Dispatch`] in memory: the process's [`Hub`](baton_hub::Hub) is the whole story.

use async_trait::async_trait;
use baton_core::{Dispatch, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};

use crate::MemoryBackend;

#[async_trait]
impl Dispatch for MemoryBackend {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.inner.dispatch.wake(queue);
        Ok(())
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        self.inner.dispatch.wakeups(queues)
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.inner.dispatch.publish(event);
        Ok(())
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        Ok(self.inner.dispatch.subscribe(id))
    }
}
