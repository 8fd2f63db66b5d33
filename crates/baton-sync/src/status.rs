//! Monitoring: who holds how many accounts ([`pool_status`]) and what one manager has done
//! ([`SyncMetrics`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use baton_core::{Claim, FencingToken, Heartbeat, ItemId, Owner, PoolName, Result, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::members_pool;

/// The state of a pool of accounts, for an autoscaler or an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The pool.
    pub pool: PoolName,
    /// How many accounts the pool holds.
    pub accounts: usize,
    /// How many of them no one has claimed.
    pub unclaimed: usize,
    /// Every manager that is registered in the pool or holds an account, by identity.
    pub identities: Vec<IdentityStatus>,
}

/// One manager's part of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStatus {
    /// The manager's identity (`host-pid` by default).
    pub identity: Owner,
    /// How many accounts it holds (expired claims not yet reaped included).
    pub accounts: usize,
    /// Whether its heartbeat is current.
    pub alive: bool,
    /// When the backend received its last beat, by the backend's clock; `None` if it has no
    /// heartbeat on record (never beat, or forgotten after a clean exit or a reap).
    pub last_heartbeat: Option<Timestamp>,
    /// When that beat expires, by the backend's clock: past it, the manager counts as dead.
    pub heartbeat_expires_at: Option<Timestamp>,
}

/// The state of `pool` as the backend sees it: accounts, unclaimed accounts, and per manager
/// its accounts, whether it is alive and when it last beat. Any process can ask, not only a
/// manager.
///
/// # Errors
///
/// `Backend` if the backend could not answer; `InvalidInput` for a pool name too long to have
/// a members pool.
pub async fn pool_status(
    claims: &dyn Claim,
    heartbeats: &dyn Heartbeat,
    pool: &PoolName,
) -> Result<PoolStatus> {
    let items = claims.items(pool).await?;
    let members = claims.items(&members_pool(pool)?).await?;
    let mut held: BTreeMap<Owner, usize> = BTreeMap::new();
    let mut unclaimed = 0;
    for item in &items {
        match &item.holder {
            Some(lease) => *held.entry(lease.owner().clone()).or_default() += 1,
            None => unclaimed += 1,
        }
    }
    let mut identities: BTreeSet<Owner> = held.keys().cloned().collect();
    identities.extend(
        members
            .iter()
            .filter_map(|member| Owner::new(member.item.as_str()).ok()),
    );
    let mut statuses = Vec::with_capacity(identities.len());
    for identity in identities {
        let beat = heartbeats.last_beat(&identity).await?;
        statuses.push(IdentityStatus {
            accounts: held.get(&identity).copied().unwrap_or(0),
            alive: beat.is_some_and(|beat| beat.alive),
            last_heartbeat: beat.and_then(|beat| beat.at),
            heartbeat_expires_at: beat.map(|beat| beat.expires_at),
            identity,
        });
    }
    Ok(PoolStatus {
        pool: pool.clone(),
        accounts: items.len(),
        unclaimed,
        identities: statuses,
    })
}

/// What one manager has done since it started, and the balance it last saw: a plain snapshot
/// for a metrics exporter or a log line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMetrics {
    /// Accounts whose workers run now.
    pub running: usize,
    /// Live managers sharing the pool, at the last maintenance.
    pub live_managers: usize,
    /// This manager's fair share, `ceil(accounts / live managers)`, at the last maintenance.
    pub fair_share: usize,
    /// Accounts in the pool at the last maintenance.
    pub pool_accounts: usize,
    /// Unclaimed accounts at the last maintenance.
    pub unclaimed: usize,
    /// When this manager's heartbeat last succeeded, by its wall clock.
    pub last_heartbeat: Option<Timestamp>,
    /// Successful heartbeats.
    pub beats: u64,
    /// Heartbeats that failed or timed out.
    pub beat_failures: u64,
    /// Times the heartbeat lapsed and every claim was dropped.
    pub heartbeat_lapses: u64,
    /// Claims taken.
    pub claims_taken: u64,
    /// Claims returned to the pool by this manager.
    pub claims_released: u64,
    /// Accounts handed back because this manager held more than its share.
    pub handed_back: u64,
    /// Claims that reached the end of their period.
    pub periods_ended: u64,
    /// Workers stopped because their claim was lost.
    pub claims_lost: u64,
    /// Workers that ended on their own.
    pub workers_ended_on_their_own: u64,
    /// Workers dropped because they did not stop in time or their claim was lost.
    pub workers_dropped: u64,
    /// Accounts of dead managers or expired claims this manager returned to the pool.
    pub reaped: u64,
    /// Accounts this manager added to the pool from the source.
    pub accounts_added: u64,
    /// Accounts this manager removed from the pool because the source no longer lists them.
    pub accounts_removed: u64,
}

/// One account a manager runs a worker for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningAccount {
    /// The account.
    pub account: ItemId,
    /// The token of the claim its worker runs under.
    pub token: FencingToken,
    /// Whether the worker has been asked to stop and is finishing.
    pub stopping: bool,
}

/// A counter that only goes up.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter of [`SyncMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) beats: Counter,
    pub(crate) beat_failures: Counter,
    pub(crate) heartbeat_lapses: Counter,
    pub(crate) claims_taken: Counter,
    pub(crate) claims_released: Counter,
    pub(crate) handed_back: Counter,
    pub(crate) periods_ended: Counter,
    pub(crate) claims_lost: Counter,
    pub(crate) workers_ended_on_their_own: Counter,
    pub(crate) workers_dropped: Counter,
    pub(crate) reaped: Counter,
    pub(crate) accounts_added: Counter,
    pub(crate) accounts_removed: Counter,
}

/// The balance a manager saw at its last maintenance.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Balance {
    pub(crate) live_managers: usize,
    pub(crate) fair_share: usize,
    pub(crate) pool_accounts: usize,
    pub(crate) unclaimed: usize,
}

/// What a manager shares with its handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    running: Mutex<BTreeMap<ItemId, RunningAccount>>,
    balance: Mutex<Balance>,
    last_beat: Mutex<Option<Timestamp>>,
}

impl Shared {
    pub(crate) fn set_last_beat(&self, at: Timestamp) {
        *lock(&self.last_beat) = Some(at);
    }

    pub(crate) fn last_beat(&self) -> Option<Timestamp> {
        *lock(&self.last_beat)
    }

    pub(crate) fn set_balance(&self, balance: Balance) {
        *lock(&self.balance) = balance;
    }

    pub(crate) fn set_running(&self, account: RunningAccount) {
        lock(&self.running).insert(account.account.clone(), account);
    }

    pub(crate) fn remove_running(&self, account: &ItemId) {
        lock(&self.running).remove(account);
    }

    pub(crate) fn running(&self) -> Vec<RunningAccount> {
        lock(&self.running).values().cloned().collect()
    }

    pub(crate) fn metrics(&self) -> SyncMetrics {
        let balance = *lock(&self.balance);
        let c = &self.counters;
        SyncMetrics {
            running: lock(&self.running).len(),
            live_managers: balance.live_managers,
            fair_share: balance.fair_share,
            pool_accounts: balance.pool_accounts,
            unclaimed: balance.unclaimed,
            last_heartbeat: self.last_beat(),
            beats: c.beats.get(),
            beat_failures: c.beat_failures.get(),
            heartbeat_lapses: c.heartbeat_lapses.get(),
            claims_taken: c.claims_taken.get(),
            claims_released: c.claims_released.get(),
            handed_back: c.handed_back.get(),
            periods_ended: c.periods_ended.get(),
            claims_lost: c.claims_lost.get(),
            workers_ended_on_their_own: c.workers_ended_on_their_own.get(),
            workers_dropped: c.workers_dropped.get(),
            reaped: c.reaped.get(),
            accounts_added: c.accounts_added.get(),
            accounts_removed: c.accounts_removed.get(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
