//! [`Dispatch`] on Redis: this process's [`Hub`] for its own waiters, pub/sub for everyone
//! else's, and the subscriber task that reconnects and subscribes again after a lost connection.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Dispatch, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};
use baton_hub::Hub;
use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::keys::Keys;
use crate::{RedisBackend, from_redis};

/// The longest pause between two attempts to reconnect the subscriber.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// The subscriber task's handle: which channels it should listen on, and this backend's origin
/// (the first word of every message it sends, so that it skips its own).
pub(crate) struct Subscriber {
    origin: String,
    keys: Keys,
    /// Channels this process listens on; kept across reconnections.
    wanted: Arc<Mutex<BTreeSet<String>>>,
    requests: mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Starts the subscriber task; it subscribes to nothing until asked.
    pub(crate) fn spawn(
        client: redis::Client,
        keys: Keys,
        hub: Arc<Hub>,
        lock_changed: Arc<Notify>,
    ) -> Self {
        let origin = format!("{:016x}", fastrand::u64(..));
        let wanted = Arc::new(Mutex::new(BTreeSet::new()));
        let (requests, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            Listener {
                client,
                keys: keys.clone(),
                origin: origin.clone(),
                hub,
                lock_changed,
                wanted: wanted.clone(),
            }
            .run(receiver),
        );
        Self {
            origin,
            keys,
            wanted,
            requests,
            task,
        }
    }

    /// This backend's origin in messages.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Subscribes to `channel` unless already subscribed, and returns once the server confirmed
    /// it (or, while disconnected, once it is recorded for the reconnection).
    async fn listen(&self, channel: &str) {
        if lock(&self.wanted).contains(channel) {
            return;
        }
        let (done, confirmed) = oneshot::channel();
        if self.requests.send((channel.to_owned(), done)).is_ok() {
            let _ = confirmed.await;
        }
    }

    /// Listens for other processes' lock releases.
    pub(crate) async fn listen_unlocks(&self) {
        self.listen(&self.keys.unlock_channel).await;
    }
}

/// The subscriber task.
struct Listener {
    client: redis::Client,
    keys: Keys,
    origin: String,
    hub: Arc<Hub>,
    lock_changed: Arc<Notify>,
    wanted: Arc<Mutex<BTreeSet<String>>>,
}

impl Listener {
    async fn run(self, mut requests: mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)>) {
        let mut delay = Duration::from_millis(50);
        loop {
            let pubsub = match self.client.get_async_pubsub().await {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    tracing::warn!(%error, "redis subscriber cannot connect; retrying");
                    // Requests made while disconnected are recorded for the reconnection.
                    while let Ok((channel, done)) = requests.try_recv() {
                        lock(&self.wanted).insert(channel);
                        let _ = done.send(());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    continue;
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            let channels: Vec<String> = lock(&self.wanted).iter().cloned().collect();
            if !channels.is_empty()
                && let Err(error) = sink.subscribe(&channels).await
            {
                tracing::warn!(%error, "redis subscriber cannot subscribe; reconnecting");
                tokio::time::sleep(delay).await;
                continue;
            }
            delay = Duration::from_millis(50);
            // Wakes and releases may have been sent while we were not listening (a spurious
            // wake costs an empty look; a lost one would strand a waiter).
            self.hub.wake_all();
            self.lock_changed.notify_waiters();
            loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(message) => self.handle(&message),
                        None => break,
                    },
                    request = requests.recv() => {
                        let Some((channel, done)) = request else { return };
                        let subscribed = sink.subscribe(&channel).await;
                        lock(&self.wanted).insert(channel);
                        let _ = done.send(());
                        if let Err(error) = subscribed {
                            tracing::warn!(%error, "redis subscriber lost its connection");
                            break;
                        }
                    }
                }
            }
            tracing::warn!("redis subscriber disconnected; reconnecting");
        }
    }

    fn handle(&self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            return;
        };
        let (origin, rest) = payload.split_once(' ').unwrap_or((payload, ""));
        if origin == self.origin {
            return;
        }
        if channel == self.keys.wake_channel {
            if let Ok(queue) = QueueName::new(rest) {
                self.hub.wake(&queue);
            }
        } else if channel == self.keys.events_channel {
            match serde_json::from_str::<Vec<JobEvent>>(rest) {
                Ok(events) => events.iter().for_each(|event| self.hub.publish(event)),
                Err(error) => tracing::warn!(%error, "ignoring a malformed job event message"),
            }
        } else if channel == self.keys.unlock_channel {
            self.lock_changed.notify_waiters();
        }
    }
}

#[async_trait]
impl Dispatch for RedisBackend {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.inner.hub.wake(queue);
        let message = format!("{} {queue}", self.inner.subscriber.origin());
        let _: i64 = self
            .connection()
            .publish(&self.inner.keys.wake_channel, message)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        let stream = self.inner.hub.wakeups(queues)?;
        self.inner
            .subscriber
            .listen(&self.inner.keys.wake_channel)
            .await;
        Ok(stream)
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.inner.hub.publish(event);
        let json = serde_json::to_string(&[event])
            .map_err(|error| baton_core::Error::invalid(format!("event: {error}")))?;
        let message = format!("{} {json}", self.inner.subscriber.origin());
        let _: i64 = self
            .connection()
            .publish(&self.inner.keys.events_channel, message)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        self.inner
            .subscriber
            .listen(&self.inner.keys.events_channel)
            .await;
        Ok(self.inner.hub.subscribe(id))
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: the set is never left half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
