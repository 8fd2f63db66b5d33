//! [`SyncManager`]: claims accounts, runs a worker per account, keeps the pool equal to the
//! source and balanced among the live managers, and returns everything on the way out.

use std::future::Future;
use std::sync::Arc;

use baton_core::{Claim, Heartbeat, Owner, PoolName, Result};
use tokio::sync::watch;

use crate::config::SyncConfig;
use crate::engine::{AbortOnDrop, Engine};
use crate::heartbeat::{BeatState, BeatTimings, beat_loop};
use crate::source::AccountSource;
use crate::status::{PoolStatus, RunningAccount, Shared, SyncMetrics, pool_status};
use crate::worker::WorkerFactory;

/// Shares a pool of accounts with every other manager on the same backend and pool, running one
/// long-lived worker per account it holds.
///
/// Every account of the [`AccountSource`] is in the pool exactly once, either unclaimed or
/// claimed by one manager; every move between the two is one atomic step in the backend. A
/// manager:
/// - beats every fifth of its heartbeat TTL, and drops every worker at once when its beats stop
///   being confirmed, before the backend can hand the accounts to anyone else;
/// - claims accounts one at a time, [spaced](SyncConfig::claim_spacing), up to its fair share
///   (`ceil(accounts / live managers)`), looking again only when it sees free accounts at
///   maintenance, when a worker of its own ends, or when the source grows: it never polls in a
///   loop;
/// - hands back what it holds above its fair share plus [slack](SyncConfig::slack), oldest
///   claims first, and returns each claim at the end of its [period](SyncConfig::claim_period);
/// - returns the accounts of managers whose heartbeat expired, and makes the pool match the
///   source;
/// - on shutdown stops every worker and returns every claim before it stops beating.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use baton_core::{ItemId, PoolName};
/// use baton_memory::MemoryBackend;
/// use baton_sync::{StaticAccounts, SyncConfig, SyncManager, WorkerContext};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> baton_core::Result<()> {
/// let backend = Arc::new(MemoryBackend::new());
/// let accounts = StaticAccounts::new([ItemId::new("account-1")?, ItemId::new("account-2")?]);
/// let config = SyncConfig::new(PoolName::new("accounts")?).with_heartbeat_ttl(Duration::from_secs(1));
/// let worker = |context: WorkerContext| async move {
///     println!("syncing {} with token {}", context.account(), context.token());
///     let reason = context.cancelled().await;
///     println!("stopped: {reason}");
/// };
/// let manager = SyncManager::new(config, backend, accounts, worker)?;
/// manager.run(tokio::time::sleep(Duration::from_secs(1))).await?;
/// # Ok(())
/// # }
/// ```
pub struct SyncManager {
    pub(crate) config: SyncConfig,
    pub(crate) members: PoolName,
    pub(crate) claims: Arc<dyn Claim>,
    pub(crate) heartbeats: Arc<dyn Heartbeat>,
    pub(crate) source: Arc<dyn AccountSource>,
    pub(crate) factory: Arc<dyn WorkerFactory>,
    pub(crate) shared: Arc<Shared>,
}

impl SyncManager {
    /// A manager on `backend`, syncing the accounts `source` lists with workers from `factory`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the configuration does not [validate](SyncConfig::validate).
    pub fn new<B>(
        config: SyncConfig,
        backend: Arc<B>,
        source: impl AccountSource + 'static,
        factory: impl WorkerFactory,
    ) -> Result<Self>
    where
        B: Claim + Heartbeat + 'static,
    {
        Self::from_parts(
            config,
            backend.clone(),
            backend,
            Arc::new(source),
            Arc::new(factory),
        )
    }

    /// A manager from shared parts, such as an `Arc<dyn Backend>` passed as both `claims` and
    /// `heartbeats`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the configuration does not [validate](SyncConfig::validate).
    pub fn from_parts(
        config: SyncConfig,
        claims: Arc<dyn Claim>,
        heartbeats: Arc<dyn Heartbeat>,
        source: Arc<dyn AccountSource>,
        factory: Arc<dyn WorkerFactory>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            members: config.members_pool()?,
            config,
            claims,
            heartbeats,
            source,
            factory,
            shared: Arc::default(),
        })
    }

    /// A handle for metrics and monitoring, usable while the manager runs.
    pub fn handle(&self) -> SyncHandle {
        SyncHandle {
            shared: self.shared.clone(),
            claims: self.claims.clone(),
            heartbeats: self.heartbeats.clone(),
            pool: self.config.pool.clone(),
            identity: self.config.identity.clone(),
        }
    }

    /// Runs until `shutdown` completes (pass [`shutdown_signal`] for SIGINT and SIGTERM), then
    /// stops every worker, returns every claim, leaves the pool and forgets its heartbeat.
    ///
    /// Dropping the future instead (or killing the process) returns nothing: other managers
    /// reap the accounts once the heartbeat expires.
    ///
    /// # Errors
    ///
    /// `Backend` if the claims could not all be returned at shutdown (other managers reap what
    /// is left once the heartbeat expires), or if the heartbeat task failed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (beat_sender, beat) = watch::channel(BeatState::default());
        let timings = BeatTimings {
            ttl: self.config.heartbeat_ttl,
            interval: self.config.heartbeat_interval(),
            margin: self.config.safety_margin(),
        };
        let beater = tokio::spawn(beat_loop(
            self.heartbeats.clone(),
            self.config.identity.clone(),
            timings,
            beat_sender,
            self.shared.clone(),
        ));
        let mut engine = Engine::new(self, AbortOnDrop(beater.abort_handle()), beat);
        engine.run(shutdown).await
    }
}

/// Metrics and monitoring of a running [`SyncManager`]. Clones share the manager.
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<Shared>,
    claims: Arc<dyn Claim>,
    heartbeats: Arc<dyn Heartbeat>,
    pool: PoolName,
    identity: Owner,
}

impl SyncHandle {
    /// The manager's identity.
    pub fn identity(&self) -> &Owner {
        &self.identity
    }

    /// A snapshot of the manager's counters and of the balance it last saw.
    pub fn metrics(&self) -> SyncMetrics {
        self.shared.metrics()
    }

    /// The accounts whose workers run now, with their tokens, ordered by account.
    pub fn running(&self) -> Vec<RunningAccount> {
        self.shared.running()
    }

    /// The pool's state as the backend sees it ([`pool_status`]).
    ///
    /// # Errors
    ///
    /// `Backend` if the backend could not answer.
    pub async fn status(&self) -> Result<PoolStatus> {
        pool_status(&*self.claims, &*self.heartbeats, &self.pool).await
    }
}

/// Completes on SIGINT or SIGTERM (on Ctrl-C where there are no Unix signals).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut terminate), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
