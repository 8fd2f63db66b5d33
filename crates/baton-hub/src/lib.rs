//! In-process fan-out of wake-ups and job events: the part of [`Dispatch`](baton_core::Dispatch)
//! every backend needs for waiters in its own process, whatever reaches other processes.
//!
//! Wake-ups are a watch channel per queue, so they coalesce and never lag; job events go only to
//! the subscribers of that job, so an event costs nothing for jobs nobody watches.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use baton_core::{Error, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

/// Where a backend routes wake-ups and job events to the waiters and subscribers of its process.
#[derive(Default)]
pub struct Hub {
    wakers: Mutex<HashMap<QueueName, watch::Sender<u64>>>,
    subscribers: Mutex<HashMap<JobId, Watchers>>,
}

/// The subscribers of one job, and the last event they were sent.
#[derive(Default)]
struct Watchers {
    senders: Vec<mpsc::UnboundedSender<JobEvent>>,
    last: Option<JobEvent>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Wakes every stream waiting on `queue`.
    pub fn wake(&self, queue: &QueueName) {
        if let Some(sender) = lock(&self.wakers).get(queue) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wakes every stream of every queue: after a gap in which wakes may have been missed, such
    /// as a lost connection to the server that carries them.
    pub fn wake_all(&self) {
        for sender in lock(&self.wakers).values() {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Sends `event` to the job's subscribers, and forgets them once the job is terminal.
    pub fn publish(&self, event: &JobEvent) {
        let mut subscribers = lock(&self.subscribers);
        let Some(watchers) = subscribers.get_mut(&event.job) else {
            return;
        };
        watchers
            .senders
            .retain(|sender| sender.send(event.clone()).is_ok());
        watchers.last = Some(event.clone());
        if watchers.senders.is_empty() || event.state.is_terminal() {
            subscribers.remove(&event.job);
        }
    }

    /// The jobs someone in this process subscribed to: after a gap in which their events may
    /// have been missed, a backend reads their current states and hands them to [`Hub::resync`].
    pub fn watched_jobs(&self) -> Vec<JobId> {
        lock(&self.subscribers).keys().copied().collect()
    }

    /// Publishes each of `current` (the jobs' states as read from the server) that differs
    /// from the last event its subscribers were sent, so that a missed change reaches them
    /// once and nothing they already saw is repeated.
    pub fn resync(&self, current: impl IntoIterator<Item = JobEvent>) {
        for event in current {
            let seen = lock(&self.subscribers)
                .get(&event.job)
                .is_some_and(|watchers| watchers.last.as_ref() == Some(&event));
            if !seen {
                self.publish(&event);
            }
        }
    }

    /// Whether any stream of this process listens for wake-ups or events: a backend may skip
    /// fetching notifications from its server while nobody listens.
    pub fn has_listeners(&self) -> bool {
        let wakers = lock(&self.wakers);
        wakers.values().any(|sender| sender.receiver_count() > 0)
            || !lock(&self.subscribers).is_empty()
    }

    /// Whether someone in this process subscribed to job `id`.
    pub fn is_watched(&self, id: JobId) -> bool {
        lock(&self.subscribers).contains_key(&id)
    }

    /// A stream that yields each time one of `queues` is woken, as
    /// [`Dispatch::wakeups`](baton_core::Dispatch::wakeups) promises.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for no queues.
    pub fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        if queues.is_empty() {
            return Err(Error::invalid("wakeups needs at least one queue"));
        }
        let receivers: Vec<(QueueName, watch::Receiver<u64>)> = {
            let mut wakers = lock(&self.wakers);
            queues
                .iter()
                .map(|queue| {
                    let sender = wakers
                        .entry(queue.clone())
                        .or_insert_with(|| watch::channel(0).0);
                    (queue.clone(), sender.subscribe())
                })
                .collect()
        };
        let stream = futures::stream::unfold(receivers, |mut receivers| async move {
            let (changed, index) = {
                let waits = receivers
                    .iter_mut()
                    .map(|(_, receiver)| Box::pin(receiver.changed()));
                let (changed, index, _rest) = futures::future::select_all(waits).await;
                (changed, index)
            };
            // The senders live as long as the hub; an error means the hub is gone.
            changed.ok()?;
            let queue = receivers[index].0.clone();
            Some((queue, receivers))
        });
        Ok(stream.boxed())
    }

    /// A stream of job `id`'s events from now on, ending after a terminal one, as
    /// [`Dispatch::subscribe`](baton_core::Dispatch::subscribe) promises.
    pub fn subscribe(&self, id: JobId) -> EventStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.subscribers)
            .entry(id)
            .or_default()
            .senders
            .push(sender);
        let stream =
            futures::stream::unfold((receiver, false), |(mut receiver, ended)| async move {
                if ended {
                    return None;
                }
                let event: JobEvent = receiver.recv().await?;
                let ended = event.state.is_terminal();
                Some((event, (receiver, ended)))
            });
        stream.boxed()
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: no critical section here can leave the
/// maps half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use baton_core::JobState;

    use super::*;

    fn event(id: i64, state: JobState) -> JobEvent {
        JobEvent {
            job: JobId::new(id),
            queue: QueueName::new("q").unwrap(),
            state,
            attempts: 0,
        }
    }

    #[tokio::test]
    async fn a_wake_sent_while_a_stream_is_open_is_never_missed() {
        let hub = Hub::default();
        let queue = QueueName::new("q").unwrap();
        let mut wakes = hub.wakeups(std::slice::from_ref(&queue)).unwrap();
        hub.wake(&queue);
        hub.wake(&queue);
        let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
        assert_eq!(woken.unwrap(), Some(queue));
    }

    #[tokio::test]
    async fn wake_all_reaches_every_queue() {
        let hub = Hub::default();
        let a = QueueName::new("a").unwrap();
        let mut wakes = hub.wakeups(std::slice::from_ref(&a)).unwrap();
        assert!(hub.has_listeners());
        hub.wake_all();
        let woken = tokio::time::timeout(Duration::from_secs(5), wakes.next()).await;
        assert_eq!(woken.unwrap(), Some(a));
    }

    #[tokio::test]
    async fn a_subscription_sees_its_job_only_and_ends_after_a_terminal_event() {
        let hub = Hub::default();
        let mut events = hub.subscribe(JobId::new(1));
        assert!(hub.is_watched(JobId::new(1)));
        hub.publish(&event(2, JobState::Running));
        hub.publish(&event(1, JobState::Running));
        hub.publish(&event(1, JobState::Succeeded));
        let seen: Vec<JobState> = events.by_ref().map(|e| e.state).collect().await;
        assert_eq!(seen, [JobState::Running, JobState::Succeeded]);
        assert!(!hub.is_watched(JobId::new(1)));
    }

    #[tokio::test]
    async fn resync_sends_what_changed_during_a_gap_and_repeats_nothing_already_seen() {
        let hub = Hub::default();
        let mut first = hub.subscribe(JobId::new(1));
        let mut second = hub.subscribe(JobId::new(2));
        hub.publish(&event(1, JobState::Running));
        hub.publish(&event(2, JobState::Running));
        assert_eq!(hub.watched_jobs().len(), 2);
        // Job 1 ended while events were not arriving; job 2 did not change.
        hub.resync([event(1, JobState::Succeeded), event(2, JobState::Running)]);
        hub.publish(&event(2, JobState::Failed));
        let seen: Vec<JobState> = first.by_ref().map(|e| e.state).collect().await;
        assert_eq!(seen, [JobState::Running, JobState::Succeeded]);
        let seen: Vec<JobState> = second.by_ref().map(|e| e.state).collect().await;
        assert_eq!(seen, [JobState::Running, JobState::Failed]);
        assert!(hub.watched_jobs().is_empty());
    }
}
