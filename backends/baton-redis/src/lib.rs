//! Baton on Redis: all five coordination traits on one Redis server, every atomic step one Lua
//! script, keys laid out for Redis Cluster, and pub/sub for wake-ups and job events.
//!
//! ```no_run
//! use std::time::Duration;
//! use baton_core::{NewJob, Owner, Queue, QueueName};
//! use baton_redis::{RedisBackend, RedisConfig};
//!
//! # async fn example() -> baton_core::Result<()> {
//! let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
//! let queue = QueueName::new("emails")?;
//! backend.enqueue(&NewJob::new(queue.clone(), serde_json::json!({"to": "a@b.c"}))?).await?;
//! let owner = Owner::new("worker-1")?;
//! for job in backend.reserve(&[queue], &owner, Duration::from_secs(30), 10).await? {
//!     backend.complete(&job.lease, serde_json::json!("sent")).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Atomic steps
//!
//! Every step that reads and writes more than one key is one Lua script (`lua/*.lua`, each
//! behind the shared `lua/common.lua` prelude), loaded once and invoked by its SHA-1 with
//! `EVALSHA`, and loaded again if the server answers `NOSCRIPT` (after a restart). A crash can
//! therefore never leave half a step behind. Every expiry is judged by the server: scripts read
//! `TIME`, heartbeats are `SET … PX`. Fencing tokens come from `INCR`/`HINCRBY` in the script
//! that grants the lease. No script does work proportional to a queue's length: reservation
//! takes the head of a sorted set, scheduled jobs are promoted and expired leases requeued in
//! bounded chunks, and finished jobs are purged in chunks.
//!
//! # Key layout
//!
//! Every key starts with a hash tag made of the configured [`KeyPrefix`] (`baton:` by default)
//! and the area, so that every key a script touches lives in one slot and the layout runs on
//! Redis Cluster unchanged (one slot per area; run backends with different prefixes to spread
//! load over a cluster). A name inside a key is written as `<byte length>:<name>`, so that no two
//! names, whatever characters they hold, share a key. With the default prefix:
//!
//! - jobs, under `{baton:jobs}:`
//!   - `seq`: the last job id;
//!   - `queues`: the name of every queue enqueued to, scored 0 so ordered by name (`queues`
//!     reads a page with `ZRANGE … BYLEX`); never trimmed, so a queue whose jobs were purged
//!     stays in it. A queue whose jobs were all stored before this set existed joins it at its
//!     next enqueue;
//!   - `paused`: a set of the paused queues' names;
//!   - `job:<id>`: a hash: `q` queue, `p` payload (JSON), `pr` priority, `st` state, `at`
//!     attempts, `rt` retry policy (JSON), `ca` created, `ra` run at, `fa` finished, `res`
//!     result (JSON), `err` last error, `ow` lease owner, `tk` last token, `ex` lease expiry,
//!     the last attempt's `as` start, `ae` end and `ao` outcome (its number is `at`, its
//!     owner `ow`), and `tp` the W3C traceparent it was enqueued with (absent if none);
//!   - `hist:<id>`: a list of the job's earlier attempts, one JSON object each, appended when
//!     the next attempt starts (so a job run once never has one);
//!   - `q:<len>:<queue>:due`: due pending jobs, scored by minus the priority, members
//!     `<run_at>:<id>` zero-padded so that equal priorities sort by due time, then id;
//!   - `q:<len>:<queue>:sched`: pending jobs due later (delayed and retried), scored by due time;
//!   - `q:<len>:<queue>:ids`: every job of the queue by id (for `last`);
//!   - `q:<len>:<queue>:counts`: a hash of job counts by state;
//!   - `running`: running jobs scored by lease expiry (so `requeue_expired` is one script);
//!   - `finished`: terminal jobs scored by when they ended (for `purge_finished`);
//! - locks, under `{baton:locks}:`: `lock:<len>:<name>` (a hash: owner, token, expiry, reason,
//!   since), `held` (names that may be held, all scored 0 so ordered by name) and `token` (the
//!   counter every grant's token comes from);
//! - heartbeats and claim pools, under `{baton:owners}:` (together, so that reaping a pool can
//!   read the heartbeats): `beats` (owners scored by heartbeat expiry), `beat_at` (a hash: owner
//!   → when its last beat arrived), `hb:<len>:<owner>` (a key
//!   set with `PX`, alive while it exists), and per pool `pool:<len>:<pool>:` followed by `free`
//!   (unclaimed items in the order they became free), `held` (claimed items by claim expiry),
//!   `lease` (item → `token|expiry|owner`), `tokens` (the last token per item, kept after
//!   removal), `seq`, and `owned:<len>:<owner>` (the items an owner holds).
//!
//! This crate connects to one server: the layout is what a cluster needs, but a cluster client
//! and a subscriber per node (scripts count a channel's subscribers with `PUBSUB NUMSUB`, which
//! counts the local node's only) are not built yet.
//!
//! Scripts receive the area's key base as an argument and build the keys of the jobs, names and
//! owners they meet from it; each script declares one key of its area, so that a cluster routes
//! it to the slot all its keys share. No command lists keys: there is no `KEYS` and no `SCAN`.
//!
//! # Notifications
//!
//! Job events and wake-ups reach this process's subscribers at once, from the reply of the script
//! that made the change. Other processes hear them through pub/sub: scripts publish
//! `<origin> <json array of events>` on `<prefix>events` and `<origin> <queue>` on `<prefix>wake`
//! (only when someone subscribes, so that the work of building them is spared otherwise), and a
//! lock release publishes on `<prefix>unlock`. A background task holds a dedicated subscriber
//! connection, subscribing to a channel the first time this process needs it. After it loses the
//! connection it reconnects, subscribes again and wakes every queue and lock waiter, since
//! messages may have been lost; job events sent while it was away are lost for this process's
//! subscribers, which should check the job with `get` after a wait times out.
//!
//! # Batching
//!
//! Concurrent `reserve` and `complete` calls of one backend share scripts: each is queued to a
//! batching task, which sends every request that arrived while its previous script ran as one
//! script call (up to 256, two batches of a kind in flight at once). Reservations of one queue in
//! a batch share one `ZPOPMIN`. Fencing stays per job: each completion is checked against its
//! own lease.

mod batch;
mod claim;
mod dispatch;
mod heartbeat;
mod keys;
mod lock;
mod queue;
mod running;
mod scripts;
mod value;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Error, Result};
use baton_hub::Hub;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

pub use keys::{KeyPrefix, MAX_PREFIX_LEN};

/// How to reach the server and name the keys.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// A `redis://[user:password@]host:port[/db]` URL.
    pub url: String,
    /// The prefix of every key and channel.
    pub prefix: KeyPrefix,
    /// How long one command or script may take before the call fails with a transient error.
    pub response_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl RedisConfig {
    /// The defaults for `url`: prefix `baton:`, a 10 s response timeout and a 5 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: KeyPrefix::default(),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The Redis backend: a cheap, cloneable handle to a multiplexed connection and the subscriber.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    keys: keys::Keys,
    scripts: Arc<scripts::Scripts>,
    batchers: batch::Batchers,
    hub: Arc<Hub>,
    /// Signalled when a lock is released (here or, through the subscriber, elsewhere).
    lock_changed: Arc<Notify>,
    subscriber: dispatch::Subscriber,
    /// The jobs this process reserved and has not finished.
    running: running::Running,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects, loads the scripts and starts the subscriber task.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed URL; `Backend` if the server cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|error| Error::invalid(format!("redis url: {error}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut connection = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(from_redis)?;
        let keys = keys::Keys::new(&config.prefix);
        let scripts = Arc::new(scripts::Scripts::new());
        scripts.load_all(&mut connection).await?;
        let hub = Arc::new(Hub::default());
        let lock_changed = Arc::new(Notify::new());
        let subscriber =
            dispatch::Subscriber::spawn(client, keys.clone(), hub.clone(), lock_changed.clone());
        let batchers = batch::Batchers::spawn(&batch::Shared {
            connection: connection.clone(),
            keys: keys.clone(),
            scripts: scripts.clone(),
            origin: subscriber.origin().to_owned(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                keys,
                scripts,
                batchers,
                hub,
                lock_changed,
                subscriber,
                running: running::Running::default(),
            }),
        })
    }

    /// The key prefix this backend uses.
    pub fn prefix(&self) -> &KeyPrefix {
        self.inner.keys.prefix()
    }

    /// A connection handle for one call: clones share one multiplexed connection, which
    /// pipelines concurrent calls and reconnects after the server comes back.
    fn connection(&self) -> ConnectionManager {
        self.inner.connection.clone()
    }
}

/// A Redis error as Baton's: transient when trying again may help (a lost connection, a
/// timeout, a server still loading), permanent otherwise.
fn from_redis(error: redis::RedisError) -> Error {
    if matches!(error.retry_method(), redis::RetryMethod::NoRetry) {
        Error::permanent(error)
    } else {
        Error::transient(error)
    }
}

/// The error of a reply whose shape no script produces: a bug or a foreign key in our space.
fn unexpected(what: impl fmt::Display) -> Error {
    Error::permanent(std::io::Error::other(format!(
        "unexpected reply from redis: {what}"
    )))
}

/// A TTL or delay in whole milliseconds, as passed to scripts.
fn millis(duration: Duration) -> i64 {
    baton_core::duration_millis(duration)
}
