//! [`Dispatch`] on MySQL: this process's [`Hub`](baton_hub::Hub) at once, other processes
//! through the events table and a [`baton_sql::EventPoller`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_core::{Dispatch, EventStream, JobEvent, JobId, QueueName, Result, WakeStream};
use baton_sql::{EventRow, FetchEvents, from_sqlx};
use futures::FutureExt;
use sqlx::MySqlPool;

use crate::MysqlStore;

use crate::sql::Statements;

/// How far behind the last sequence number seen the poller looks again: a transaction that
/// took a lower number may commit after a higher one was read. Well under the fetch limit of
/// 1000, so that each fetch still has room for new rows.
const LOOKBACK: i64 = 200;
/// Event rows older than this are deleted, every [`PURGE_EVERY`] polls.
const EVENT_RETENTION_MS: i64 = 10 * 60 * 1000;
const PURGE_EVERY: u64 = 1000;

const FETCH: &str = "SELECT seq, job_id, queue, state, attempts FROM {prefix}events \
     WHERE seq > ? AND origin <> ? ORDER BY seq LIMIT 1000";
const PURGE: &str = "DELETE FROM {prefix}events WHERE created_at < {now} - ? LIMIT 10000";

/// What the poller remembers between fetches: the recent sequence numbers it delivered.
#[derive(Default)]
struct Seen {
    delivered: BTreeSet<i64>,
    polls: u64,
}

/// The poller's fetch: other origins' rows after `after - LOOKBACK` not yet delivered (and
/// none from before `start_after`, when this backend connected); now and then it also purges
/// old rows.
pub(crate) fn fetcher(
    pool: MySqlPool,
    statements: &Statements,
    origin: String,
    start_after: i64,
) -> FetchEvents {
    let fetch = statements.get(FETCH);
    let purge = statements.get(PURGE);
    let seen = Arc::new(Mutex::new(Seen::default()));
    Arc::new(move |after: i64| {
        let (pool, fetch, purge, origin, seen) = (
            pool.clone(),
            fetch.clone(),
            purge.clone(),
            origin.clone(),
            seen.clone(),
        );
        async move {
            let purge_now = {
                let mut seen = lock(&seen);
                seen.polls += 1;
                seen.polls % PURGE_EVERY == 0
            };
            if purge_now
                && let Err(error) = sqlx::query(purge)
                    .bind(EVENT_RETENTION_MS)
                    .execute(&pool)
                    .await
            {
                tracing::warn!(%error, "purging old event rows failed");
            }
            let rows: Vec<EventRow> = sqlx::query_as(fetch)
                .bind(after.saturating_sub(LOOKBACK))
                .bind(&origin)
                .fetch_all(&pool)
                .await
                .map_err(from_sqlx)?;
            let mut seen = lock(&seen);
            let fresh: Vec<EventRow> = rows
                .into_iter()
                .filter(|row| row.seq > start_after && seen.delivered.insert(row.seq))
                .collect();
            let floor = after.saturating_sub(2 * LOOKBACK);
            seen.delivered = seen.delivered.split_off(&floor);
            Ok(fresh)
        }
        .boxed()
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Dispatch for MysqlStore {
    async fn wake(&self, queue: &QueueName) -> Result<()> {
        self.inner.hub.wake(queue);
        self.publish_remote(&baton_sql::wake_event(queue)).await
    }

    async fn wakeups(&self, queues: &[QueueName]) -> Result<WakeStream> {
        self.inner.hub.wakeups(queues)
    }

    async fn publish(&self, event: &JobEvent) -> Result<()> {
        self.inner.hub.publish(event);
        self.publish_remote(event).await
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream> {
        Ok(self.inner.hub.subscribe(id))
    }
}

impl MysqlStore {
    async fn publish_remote(&self, event: &JobEvent) -> Result<()> {
        let mut conn = self.inner.pool.acquire().await.map_err(from_sqlx)?;
        self.write_events(&mut conn, std::slice::from_ref(event))
            .await
            .map_err(|error| match error {
                crate::sql::TxError::Sql(error) => from_sqlx(error),
                crate::sql::TxError::Baton(error) => error,
            })
    }
}
