//! [`Dispatch`] on PostgreSQL: this process's [`Hub`] at once, other processes through
//! `LISTEN/NOTIFY` on a dedicated connection held by a background task.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Dispatch, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};
use baton_hub::Hub;
use baton_sql::{TablePrefix, from_sqlx};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgNotification};
use sqlx::{PgPool, Row, SqlStr};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::PostgresBackend;

/// How long the listener waits before reconnecting after a failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// The notification channels of one table prefix.
#[derive(Clone, Debug)]
pub(crate) struct Channels {
    events: String,
    wake: String,
    unlock: String,
}

impl Channels {
    pub(crate) fn new(prefix: &TablePrefix) -> Self {
        Self {
            events: prefix.table("events"),
            wake: prefix.table("wake"),
            unlock: prefix.table("unlock"),
        }
    }
}

/// A job event as sent on the events channel: compact, and naming the backend that sent it.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The sending backend's origin id.
    o: i64,
    /// Job id.
    j: i64,
    /// Queue.
    q: String,
    /// State name.
    s: String,
    /// Attempts.
    a: u32,
}

/// The event with these parts, or `None` if a part is corrupt.
fn parse_event(job: i64, queue: &str, state: &str, attempts: u32) -> Option<JobEvent> {
    Some(JobEvent {
        job: JobId::new(job),
        queue: QueueName::new(queue).ok()?,
        state: state.parse().ok()?,
        attempts,
    })
}

impl Payload {
    fn to_event(&self) -> Option<JobEvent> {
        parse_event(self.j, &self.q, &self.s, self.a)
    }
}

/// The events of one statement as sent on the events channel: `e` holds `[job id, queue,
/// state, attempts]` per job, in the statement's order (see `EVENTS` in `sql.rs`).
#[derive(Debug, Deserialize)]
struct Events {
    /// The sending backend's origin id.
    o: i64,
    /// The events.
    e: Vec<(i64, String, String, u32)>,
}

/// What the events channel carries: one event (`Dispatch::publish`, and older senders) or
/// the events of one statement.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Notification {
    One(Payload),
    Many(Events),
}

/// A random id for this backend, so that it recognises its own notifications.
pub(crate) fn new_origin() -> i64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 1) as i64
}

/// Starts listening (the `LISTEN`s are in place when this returns) and spawns the task that
/// hands notifications to `hub`.
///
/// Notifications sent while the connection is down are lost, so after it drops the task
/// listens again, then wakes every waiter of this process (they look for work and locks
/// again) and reads the current state of every job someone here subscribed to with
/// `job_states`, handing any change they missed to their subscribers.
pub(crate) async fn spawn_listener(
    pool: &PgPool,
    channels: Channels,
    job_states: SqlStr,
    origin: i64,
    hub: Arc<Hub>,
    lock_changed: Arc<Notify>,
) -> Result<JoinHandle<()>> {
    let mut listener = PgListener::connect_with(pool).await.map_err(from_sqlx)?;
    listener.ignore_pool_close_event(true);
    listener
        .listen_all([
            channels.events.as_str(),
            channels.wake.as_str(),
            channels.unlock.as_str(),
        ])
        .await
        .map_err(from_sqlx)?;
    let pool = pool.clone();
    // How every event notification of this backend starts, so that it skips them unparsed.
    let own_prefix = format!("{{\"o\":{origin},");
    Ok(tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if notification.channel() == channels.events
                        && notification.payload().starts_with(&own_prefix)
                    {
                        continue;
                    }
                    handle(&notification, &channels, origin, &hub, &lock_changed);
                    continue;
                }
                Ok(None) => tracing::warn!("notification connection lost; reconnecting"),
                Err(error) => {
                    tracing::warn!(%error, "listening for notifications failed; reconnecting");
                }
            }
            listen_again(&mut listener, &channels).await;
            hub.wake_all();
            lock_changed.notify_waiters();
            resync_watched_jobs(&pool, &job_states, &hub).await;
        }
    }))
}

/// Reconnects `listener` and puts its `LISTEN`s back in place, retrying until that works.
async fn listen_again(listener: &mut PgListener, channels: &Channels) {
    loop {
        // Dropping one channel and listening on it again makes the listener reconnect (with
        // every `LISTEN`) without adding a channel twice.
        let relistened = match listener.unlisten(&channels.wake).await {
            Ok(()) => listener.listen(&channels.wake).await,
            Err(error) => Err(error),
        };
        match relistened {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for notifications yet; retrying");
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
}

/// Reads the state of every job subscribed to in this process and hands it to the hub, which
/// passes on what changed unseen. On failure the subscribers keep waiting for the next event.
async fn resync_watched_jobs(pool: &PgPool, job_states: &SqlStr, hub: &Hub) {
    let watched: Vec<i64> = hub.watched_jobs().into_iter().map(JobId::get).collect();
    if watched.is_empty() {
        return;
    }
    let rows = sqlx::query(job_states.clone())
        .bind(&watched)
        .fetch_all(pool)
        .await;
    match rows {
        Ok(rows) => hub.resync(rows.iter().filter_map(|row| {
            let attempts: i32 = row.try_get("attempts").ok()?;
            parse_event(
                row.try_get("id").ok()?,
                row.try_get("queue").ok()?,
                row.try_get("state").ok()?,
                u32::try_from(attempts).ok()?,
            )
        })),
        Err(error) => {
            tracing::warn!(%error, "cannot read the state of watched jobs after a reconnect");
        }
    }
}

fn handle(
    notification: &PgNotification,
    channels: &Channels,
    origin: i64,
    hub: &Hub,
    lock_changed: &Notify,
) {
    let channel = notification.channel();
    if channel == channels.wake {
        if let Ok(queue) = QueueName::new(notification.payload()) {
            hub.wake(&queue);
        }
    } else if channel == channels.unlock {
        lock_changed.notify_waiters();
    } else if channel == channels.events {
        match serde_json::from_str::<Notification>(notification.payload()) {
            Ok(Notification::One(payload)) => {
                if payload.o != origin
                    && let Some(event) = payload.to_event()
                {
                    hub.publish(&event);
                }
            }
            Ok(Notification::Many(events)) => {
                if events.o != origin {
                    for (job, queue, state, attempts) in &events.e {
                        if let Some(event) = parse_event(*job, queue, state, *attempts) {
                            hub.publish(&event);
                        }
                    }
                }
            }
            Err(_) => {
                tracing::warn!(
                    payload = notification.payload(),
                    "skipping a corrupt job event"
                );
            }
        }
    }
}

#[async_trait]
impl Dispatch for PostgresBackend {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.inner.hub.wake(queue);
        sqlx::query(self.inner.shared.sql.notify_wake.clone())
            .bind(queue.as_str())
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        self.inner.hub.wakeups(queues)
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.inner.hub.publish(event);
        let payload = Payload {
            o: self.inner.shared.origin,
            j: event.job.get(),
            q: event.queue.as_str().to_owned(),
            s: event.state.as_str().to_owned(),
            a: event.attempts,
        };
        let text = serde_json::to_string(&payload).unwrap_or_default();
        sqlx::query(self.inner.shared.sql.notify_event.clone())
            .bind(text)
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        Ok(self.inner.hub.subscribe(id))
    }
}
