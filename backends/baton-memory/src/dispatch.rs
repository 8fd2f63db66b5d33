//! [`Dispatch`] in memory: a watch channel per queue for wake-ups, and per-job subscriber lists
//! so that an event costs nothing for jobs nobody watches.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use baton_core::{Dispatch, Error, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::{MemoryBackend, lock};

/// Where wake-ups and job events are routed.
#[derive(Default)]
pub(crate) struct Hub {
    wakers: Mutex<HashMap<QueueName, watch::Sender<u64>>>,
    subscribers: Mutex<HashMap<JobId, Vec<mpsc::UnboundedSender<JobEvent>>>>,
}

impl Hub {
    /// Wakes every stream waiting on `queue`.
    pub(crate) fn wake(&self, queue: &QueueName) {
        let wakers = lock(&self.wakers);
        if let Some(sender) = wakers.get(queue) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Sends `event` to the job's subscribers, and forgets them once the job is terminal.
    pub(crate) fn publish(&self, event: &JobEvent) {
        let mut subscribers = lock(&self.subscribers);
        let Some(senders) = subscribers.get_mut(&event.job) else {
            return;
        };
        senders.retain(|sender| sender.send(event.clone()).is_ok());
        if senders.is_empty() || event.state.is_terminal() {
            subscribers.remove(&event.job);
        }
    }

    fn watch(&self, queue: &QueueName) -> watch::Receiver<u64> {
        lock(&self.wakers)
            .entry(queue.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn subscribe(&self, id: JobId) -> mpsc::UnboundedReceiver<JobEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.subscribers).entry(id).or_default().push(sender);
        receiver
    }
}

#[async_trait]
impl Dispatch for MemoryBackend {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.inner.dispatch.wake(queue);
        Ok(())
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        if queues.is_empty() {
            return Err(Error::invalid("wakeups needs at least one queue"));
        }
        let receivers: Vec<(QueueName, watch::Receiver<u64>)> = queues
            .iter()
            .map(|queue| (queue.clone(), self.inner.dispatch.watch(queue)))
            .collect();
        let stream = futures::stream::unfold(receivers, |mut receivers| async move {
            let (changed, index) = {
                let waits = receivers
                    .iter_mut()
                    .map(|(_, receiver)| Box::pin(receiver.changed()));
                let (changed, index, _rest) = futures::future::select_all(waits).await;
                (changed, index)
            };
            // The sender lives as long as the backend; an error means the backend is gone.
            changed.ok()?;
            let queue = receivers[index].0.clone();
            Some((queue, receivers))
        });
        Ok(stream.boxed())
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.inner.dispatch.publish(event);
        Ok(())
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        let receiver = self.inner.dispatch.subscribe(id);
        let stream =
            futures::stream::unfold((receiver, false), |(mut receiver, ended)| async move {
                if ended {
                    return None;
                }
                let event = receiver.recv().await?;
                let ended = event.state.is_terminal();
                Some((event, (receiver, ended)))
            });
        Ok(stream.boxed())
    }
}
