//! What the in-process tests share: a clock that follows tokio's (paused) clock, a worker that
//! records every run and notices two runs of one account at once, and a cluster of managers on
//! one memory backend.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Claim, Clock, FencingToken, ItemId, Owner, PoolName, Timestamp};
use baton_memory::MemoryBackend;
use baton_sync::{StaticAccounts, StopReason, SyncConfig, SyncHandle, SyncManager, WorkerContext};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The backend's clock, driven by tokio's: under `start_paused` both move together, only when
/// every task waits, so expiry and the managers' timers agree exactly and no test sleeps.
#[derive(Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    start: Timestamp,
}

impl TokioClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: tokio::time::Instant::now(),
            start: Timestamp::from_millis(1_735_689_600_000),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start.saturating_add(self.origin.elapsed())
    }
}

/// One run of a worker.
#[derive(Clone, Debug)]
pub struct Run {
    pub who: usize,
    pub account: ItemId,
    pub token: FencingToken,
    pub started: tokio::time::Instant,
    pub ended: Option<tokio::time::Instant>,
    pub reason: Option<StopReason>,
}

/// Every run of every worker, and every time an account ran twice at once or a token did not
/// increase.
#[derive(Default)]
pub struct Log {
    pub runs: Vec<Run>,
    pub running: HashMap<ItemId, usize>,
    pub last_token: HashMap<ItemId, FencingToken>,
    pub violations: Vec<String>,
    /// Accounts whose next worker returns on its own after this long.
    pub end_on_own: HashMap<ItemId, Duration>,
    /// Contexts of the running workers, to act on their claims from the test.
    pub contexts: HashMap<(usize, ItemId), WorkerContext>,
}

pub type SharedLog = Arc<Mutex<Log>>;

struct RunGuard {
    log: SharedLog,
    index: usize,
    context: WorkerContext,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut log = self.log.lock().unwrap();
        let run = &mut log.runs[self.index];
        run.ended = Some(tokio::time::Instant::now());
        run.reason = self.context.stop_reason();
        let (who, account) = (run.who, run.account.clone());
        log.running.remove(&account);
        log.contexts.remove(&(who, account));
    }
}

/// A worker factory for manager `who`: records its run, waits to be cancelled (or returns on
/// its own when the test asked for it).
pub fn recorder(
    who: usize,
    log: SharedLog,
) -> impl Fn(WorkerContext) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
{
    move |context: WorkerContext| {
        let log = log.clone();
        Box::pin(async move {
            let account = context.account().clone();
            let token = context.token();
            let (index, end_after) = {
                let mut log = log.lock().unwrap();
                if let Some(other) = log.running.get(&account) {
                    let message =
                        format!("{account} started on manager {who} while manager {other} runs it");
                    log.violations.push(message);
                }
                if let Some(last) = log.last_token.get(&account)
                    && *last >= token
                {
                    let message = format!("{account} token {token} after {last}");
                    log.violations.push(message);
                }
                log.running.insert(account.clone(), who);
                log.last_token.insert(account.clone(), token);
                log.contexts.insert((who, account.clone()), context.clone());
                log.runs.push(Run {
                    who,
                    account: account.clone(),
                    token,
                    started: tokio::time::Instant::now(),
                    ended: None,
                    reason: None,
                });
                (log.runs.len() - 1, log.end_on_own.remove(&account))
            };
            let _guard = RunGuard {
                log,
                index,
                context: context.clone(),
            };
            match end_after {
                Some(after) => {
                    tokio::select! {
                        _ = context.cancelled() => {}
                        () = tokio::time::sleep(after) => {}
                    }
                }
                None => {
                    context.cancelled().await;
                }
            }
        })
    }
}

pub fn pool() -> PoolName {
    PoolName::new("accounts").unwrap()
}

pub fn account(n: usize) -> ItemId {
    ItemId::new(format!("account-{n:03}")).unwrap()
}

pub fn accounts(range: std::ops::Range<usize>) -> Vec<ItemId> {
    range.map(account).collect()
}

pub fn identity(who: usize) -> Owner {
    Owner::new(format!("manager-{who}")).unwrap()
}

/// Short timings for tests: a 1 s heartbeat, maintenance and source every 500 ms, 10 ms
/// between claims, a slack of one, hour-long claims.
pub fn config(who: usize) -> SyncConfig {
    let mut config = SyncConfig::new(pool()).with_heartbeat_ttl(Duration::from_secs(1));
    config.identity = identity(who);
    config.maintenance_interval = Duration::from_millis(500);
    config.source_interval = Duration::from_millis(500);
    config.claim_spacing = Duration::from_millis(10);
    config.claim_period = Duration::from_secs(3600);
    config.worker_stop_timeout = Duration::from_secs(1);
    config
}

/// A manager of the cluster.
pub struct Member {
    pub handle: SyncHandle,
    pub task: Option<JoinHandle<baton_core::Result<()>>>,
    stop: Option<oneshot::Sender<()>>,
}

/// Managers on one memory backend whose clock follows tokio's.
pub struct Cluster {
    pub backend: MemoryBackend,
    pub source: StaticAccounts,
    pub log: SharedLog,
    pub members: BTreeMap<usize, Member>,
}

impl Cluster {
    pub fn new(accounts: usize) -> Self {
        Self {
            backend: MemoryBackend::with_clock(TokioClock::new()),
            source: StaticAccounts::new((0..accounts).map(account)),
            log: SharedLog::default(),
            members: BTreeMap::new(),
        }
    }

    /// Starts manager `who` with `config(who)`.
    pub fn start(&mut self, who: usize) -> SyncHandle {
        self.start_with(who, config(who))
    }

    pub fn start_with(&mut self, who: usize, config: SyncConfig) -> SyncHandle {
        self.start_on(who, config, Arc::new(self.backend.clone()))
    }

    pub fn start_on<B>(&mut self, who: usize, config: SyncConfig, backend: Arc<B>) -> SyncHandle
    where
        B: Claim + baton_core::Heartbeat + 'static,
    {
        let manager = SyncManager::new(
            config,
            backend,
            self.source.clone(),
            recorder(who, self.log.clone()),
        )
        .unwrap();
        let handle = manager.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(manager.run(async move {
            let _ = stopped.await;
        }));
        self.members.insert(
            who,
            Member {
                handle: handle.clone(),
                task: Some(task),
                stop: Some(stop),
            },
        );
        handle
    }

    /// Stops manager `who` the way SIGTERM does, and waits until it has left.
    pub async fn stop(&mut self, who: usize) -> baton_core::Result<()> {
        let mut member = self.members.remove(&who).unwrap();
        let _ = member.stop.take().unwrap().send(());
        member.task.take().unwrap().await.unwrap()
    }

    /// Kills manager `who` the way SIGKILL does: no worker stops, no claim is returned.
    pub async fn crash(&mut self, who: usize) {
        let mut member = self.members.remove(&who).unwrap();
        let task = member.task.take().unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    /// Which live manager runs each account, failing on an account run by two.
    pub fn running(&self) -> BTreeMap<ItemId, usize> {
        let mut running = BTreeMap::new();
        for (who, member) in &self.members {
            for account in member.handle.running() {
                if account.stopping {
                    continue;
                }
                if let Some(other) = running.insert(account.account.clone(), *who) {
                    panic!("{} runs on managers {other} and {who}", account.account);
                }
            }
        }
        running
    }

    /// How many accounts each live manager runs.
    pub fn counts(&self) -> BTreeMap<usize, usize> {
        let mut counts: BTreeMap<usize, usize> = self.members.keys().map(|who| (*who, 0)).collect();
        for who in self.running().values() {
            *counts.entry(*who).or_default() += 1;
        }
        counts
    }

    /// Whether every account of the source is in the pool, held by a live manager that runs
    /// its worker, and nothing else is.
    pub async fn settled(&self) -> bool {
        let items = self.backend.items(&pool()).await.unwrap();
        let wanted: BTreeSet<ItemId> = self.source.list().into_iter().collect();
        let present: BTreeSet<ItemId> = items.iter().map(|status| status.item.clone()).collect();
        if wanted != present {
            return false;
        }
        let running = self.running();
        items.iter().all(|status| {
            let Some(holder) = &status.holder else {
                return false;
            };
            running
                .get(&status.item)
                .is_some_and(|who| *holder.owner() == identity(*who))
        })
    }

    /// Waits (in tokio's clock) until the cluster is settled and `also` holds.
    pub async fn wait_settled(&self, within: Duration, also: impl Fn(&Self) -> bool) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            if self.settled().await && also(self) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "not settled within {within:?}: counts {:?}",
                self.counts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fails if any account ever ran twice at once or its tokens did not increase.
    pub fn assert_no_overlap(&self) {
        let log = self.log.lock().unwrap();
        assert!(log.violations.is_empty(), "{:#?}", log.violations);
    }
}

/// Waits (in tokio's clock) until `condition` holds.
pub async fn wait_for(what: &str, within: Duration, condition: impl Fn() -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        if condition() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
