//! Job events carried between processes through an events table, for databases without
//! `LISTEN/NOTIFY` (MySQL, SQLite).
//!
//! Each backend writes one row per job state change into `<prefix>events`, in the same
//! transaction as the change, naming its own process as the row's origin; it delivers the event
//! to its own process's [`Hub`] at once. An [`EventPoller`] reads the rows of other origins and
//! delivers them too, polling at an adaptive interval: [`POLL_MIN`] after it found something,
//! doubling while it finds nothing, up to [`POLL_MAX`]. A waiter in another process therefore
//! hears of a change at most [`POLL_MAX`] plus one query later.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{JobEvent, JobId, JobState, QueueName, Result};
use baton_hub::Hub;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;

/// The shortest wait between two polls: right after events were found.
pub const POLL_MIN: Duration = Duration::from_millis(10);
/// The longest wait between two polls: the worst-case extra latency of a cross-process event.
pub const POLL_MAX: Duration = Duration::from_millis(250);

/// The event that carries a bare [`Dispatch::wake`](baton_core::Dispatch::wake) of `queue` to
/// other processes: a pending event for job 0, which wakes the queue where it arrives and
/// reaches no subscriber, since job ids start at 1.
pub fn wake_event(queue: &QueueName) -> JobEvent {
    JobEvent {
        job: JobId::new(0),
        queue: queue.clone(),
        state: JobState::Pending,
        attempts: 0,
    }
}

/// A row of the events table.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    /// Increasing sequence number.
    pub seq: i64,
    /// The job that changed.
    pub job_id: i64,
    /// Its queue.
    pub queue: String,
    /// Its new state's name.
    pub state: String,
    /// Attempts started at the change.
    pub attempts: i32,
}

impl EventRow {
    /// The event this row records, or `None` if the row is corrupt.
    pub fn to_event(&self) -> Option<JobEvent> {
        Some(JobEvent {
            job: JobId::new(self.job_id),
            queue: QueueName::new(&self.queue).ok()?,
            state: self.state.parse::<JobState>().ok()?,
            attempts: u32::try_from(self.attempts).ok()?,
        })
    }
}

/// Reads the events rows of other processes with a sequence number above the one given,
/// oldest first: `SELECT seq, job_id, queue, state, attempts FROM <prefix>events WHERE seq > ?
/// AND origin <> ? ORDER BY seq LIMIT 1000`.
pub type FetchEvents = Arc<dyn Fn(i64) -> BoxFuture<'static, Result<Vec<EventRow>>> + Send + Sync>;

/// A background task delivering other processes' events to this process's [`Hub`]; it stops
/// when dropped.
#[derive(Debug)]
pub struct EventPoller {
    task: JoinHandle<()>,
}

impl EventPoller {
    /// Starts polling after sequence number `start_after` (the table's highest when the backend
    /// connected, so history is not replayed). Each event is published to its subscribers, and a
    /// job that became pending wakes its queue. After a failed poll every queue is woken, since
    /// wakes may have been missed, and polling goes on at [`POLL_MAX`].
    pub fn spawn(hub: Arc<Hub>, start_after: i64, fetch: FetchEvents) -> Self {
        let task = tokio::spawn(async move {
            let mut after = start_after;
            let mut interval = POLL_MIN;
            loop {
                match fetch(after).await {
                    Ok(rows) if rows.is_empty() => interval = (interval * 2).min(POLL_MAX),
                    Ok(rows) => {
                        for row in &rows {
                            after = after.max(row.seq);
                            let Some(event) = row.to_event() else {
                                tracing::warn!(seq = row.seq, "skipping a corrupt event row");
                                continue;
                            };
                            hub.publish(&event);
                            if event.state == JobState::Pending {
                                hub.wake(&event.queue);
                            }
                        }
                        interval = POLL_MIN;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "polling job events failed; retrying");
                        hub.wake_all();
                        interval = POLL_MAX;
                    }
                }
                tokio::time::sleep(interval).await;
            }
        });
        Self { task }
    }
}

impl Drop for EventPoller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::{FutureExt, StreamExt};

    use super::*;

    #[tokio::test]
    async fn polled_events_reach_subscribers_and_wake_their_queue() {
        let hub = Arc::new(Hub::default());
        let queue = QueueName::new("q").unwrap();
        let mut wakes = hub.wakeups(std::slice::from_ref(&queue)).unwrap();
        let events = hub.subscribe(JobId::new(5));
        let rows = Arc::new(Mutex::new(vec![
            EventRow {
                seq: 11,
                job_id: 5,
                queue: "q".into(),
                state: "pending".into(),
                attempts: 0,
            },
            EventRow {
                seq: 12,
                job_id: 5,
                queue: "q".into(),
                state: "succeeded".into(),
                attempts: 1,
            },
        ]));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let fetch: FetchEvents = {
            let (rows, asked) = (rows.clone(), asked.clone());
            Arc::new(move |after| {
                asked.lock().unwrap().push(after);
                let found: Vec<EventRow> = rows.lock().unwrap().drain(..).collect();
                async move { Ok(found) }.boxed()
            })
        };
        let _poller = EventPoller::spawn(hub.clone(), 10, fetch);
        let within = Duration::from_secs(5);
        assert_eq!(
            tokio::time::timeout(within, wakes.next()).await.unwrap(),
            Some(queue)
        );
        let states: Vec<JobState> =
            tokio::time::timeout(within, events.map(|e| e.state).collect::<Vec<_>>())
                .await
                .unwrap();
        assert_eq!(states, [JobState::Pending, JobState::Succeeded]);
        tokio::time::timeout(within, async {
            while !asked.lock().unwrap().contains(&12) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the poller moved past the events it delivered");
    }
}
