//! The rebalance figures: how long a sync pool of 1,000 accounts shared by sync managers takes
//! to settle again when a fourth manager joins three (`join`), and when one of four crashes
//! without returning anything (`crash`).
//!
//! The managers run in this process, each with its own identity on the bench's backend
//! handle; a crash drops a manager without any cleanup, as SIGKILL would, so its accounts move
//! only once its heartbeat has expired and a survivor has reaped them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_core::{Claim, Heartbeat, ItemId, Owner, PoolName};
use baton_sync::{
    StaticAccounts, SyncConfig, SyncHandle, SyncManager, WorkerContext, members_pool,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Bench, Figure};

/// Accounts in the pool.
pub(super) const ACCOUNTS: usize = 1_000;
/// Managers once the pool is complete.
pub(super) const MANAGERS: usize = 4;
/// The managers' heartbeat TTL; they beat every fifth of it.
const HEARTBEAT_TTL: Duration = Duration::from_secs(2);
/// How often they reap, rebalance and check their claims.
const MAINTENANCE: Duration = Duration::from_millis(500);
/// The pause between two claims of one manager.
const CLAIM_SPACING: Duration = Duration::from_millis(5);
/// How long a figure may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(300);

/// Three managers share the pool; a fourth joins. The figure is the time from its start until
/// it holds its fair share and every account is held.
pub(super) async fn join(bench: &Bench) -> anyhow::Result<Figure> {
    let mut pool = SyncPool::new(bench, "join")?;
    for who in 0..MANAGERS - 1 {
        pool.start(who)?;
    }
    pool.wait(|counts| settled(counts, MANAGERS - 1)).await?;
    let started = Instant::now();
    pool.start(MANAGERS - 1)?;
    pool.wait(|counts| settled(counts, MANAGERS)).await?;
    let elapsed = started.elapsed();
    pool.finish().await?;
    Ok(figure(bench, "join", elapsed))
}

/// Four managers share the pool; one crashes. The figure is the time from the crash until the
/// three others hold every account (heartbeat expiry, reaping and claiming included).
pub(super) async fn crash(bench: &Bench) -> anyhow::Result<Figure> {
    let mut pool = SyncPool::new(bench, "crash")?;
    for who in 0..MANAGERS {
        pool.start(who)?;
    }
    pool.wait(|counts| settled(counts, MANAGERS)).await?;
    let started = Instant::now();
    pool.crash(MANAGERS - 1).await;
    pool.wait(|counts| settled(counts, MANAGERS - 1)).await?;
    let elapsed = started.elapsed();
    pool.finish().await?;
    Ok(figure(bench, "crash", elapsed))
}

fn figure(bench: &Bench, mode: &str, elapsed: Duration) -> Figure {
    Figure {
        mode: Some(mode.to_owned()),
        ops: Some(ACCOUNTS as u64),
        tasks: Some(MANAGERS as u32),
        ..bench.figure("rebalance", elapsed)
    }
}

/// Whether `live` managers hold every account between them, none more than its fair share
/// plus the slack (one): so a newcomer holds at least its share less the others' slack.
fn settled(counts: &[Option<usize>], live: usize) -> bool {
    let held: Vec<usize> = counts.iter().flatten().copied().collect();
    let share = baton_sync::fair_share(ACCOUNTS, live);
    held.len() == live
        && held.iter().sum::<usize>() == ACCOUNTS
        && held.iter().all(|&count| count <= share + 1)
}

/// A manager of the bench's pool.
struct Running {
    handle: SyncHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<baton_core::Result<()>>,
}

/// The managers of one figure and the pool they share.
struct SyncPool<'a> {
    bench: &'a Bench,
    pool: PoolName,
    accounts: Vec<ItemId>,
    managers: Vec<Option<Running>>,
    crashed: Vec<Owner>,
}

impl<'a> SyncPool<'a> {
    fn new(bench: &'a Bench, purpose: &str) -> anyhow::Result<Self> {
        let pool = PoolName::new(format!("{}-sync-{purpose}", bench.run_id))?;
        let accounts = (0..ACCOUNTS)
            .map(|n| ItemId::new(format!("account-{n:04}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            bench,
            pool,
            accounts,
            managers: Vec::new(),
            crashed: Vec::new(),
        })
    }

    fn start(&mut self, who: usize) -> anyhow::Result<()> {
        let mut config = SyncConfig::new(self.pool.clone()).with_heartbeat_ttl(HEARTBEAT_TTL);
        config.identity = self.bench.owner(&format!("sync-{who}"))?;
        config.maintenance_interval = MAINTENANCE;
        config.source_interval = MAINTENANCE;
        config.claim_spacing = CLAIM_SPACING;
        let worker = |context: WorkerContext| async move {
            context.cancelled().await;
        };
        let backend = self.bench.backend.clone();
        let manager = SyncManager::from_parts(
            config,
            backend.clone(),
            backend,
            Arc::new(StaticAccounts::new(self.accounts.clone())),
            Arc::new(worker),
        )?;
        let handle = manager.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(manager.run(async move {
            let _ = stopped.await;
        }));
        if self.managers.len() <= who {
            self.managers.resize_with(who + 1, || None);
        }
        self.managers[who] = Some(Running {
            handle,
            stop: Some(stop),
            task,
        });
        Ok(())
    }

    /// Drops manager `who` with no cleanup at all.
    async fn crash(&mut self, who: usize) {
        if let Some(running) = self.managers[who].take() {
            running.task.abort();
            let _ = running.task.await;
            self.crashed.push(running.handle.identity().clone());
        }
    }

    /// Waits until `done` holds for the accounts each manager runs (`None` for a crashed one).
    async fn wait(&self, done: impl Fn(&[Option<usize>]) -> bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let counts: Vec<Option<usize>> = self
                .managers
                .iter()
                .map(|running| {
                    running.as_ref().map(|running| {
                        running
                            .handle
                            .running()
                            .iter()
                            .filter(|account| !account.stopping)
                            .count()
                    })
                })
                .collect();
            if done(&counts) {
                return Ok(());
            }
            if started.elapsed() > LIMIT {
                bail!("the sync pool did not settle within {LIMIT:?}: {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops every manager, then removes the pool's accounts and the crashed managers' records.
    async fn finish(mut self) -> anyhow::Result<()> {
        for running in self.managers.iter_mut().flatten() {
            if let Some(stop) = running.stop.take() {
                let _ = stop.send(());
            }
        }
        for running in self.managers.drain(..).flatten() {
            running
                .task
                .await
                .context("a sync manager panicked")?
                .context("a sync manager did not return its claims")?;
        }
        let backend = &self.bench.backend;
        for chunk in self.accounts.chunks(baton_core::MAX_ITEMS) {
            Claim::remove(backend.as_ref(), &self.pool, chunk).await?;
        }
        let members: Vec<ItemId> = self
            .crashed
            .iter()
            .map(|owner| ItemId::new(owner.as_str()))
            .collect::<Result<_, _>>()?;
        Claim::remove(backend.as_ref(), &members_pool(&self.pool)?, &members).await?;
        for owner in &self.crashed {
            Heartbeat::forget(backend.as_ref(), owner).await?;
        }
        Ok(())
    }
}
