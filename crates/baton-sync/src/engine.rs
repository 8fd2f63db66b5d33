//! The running manager: one task that owns every claim and worker of a [`SyncManager`] and
//! reacts to its heartbeat, its workers, its timers and the backend.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use baton_core::{ClaimLease, Error, ItemId, MAX_ITEMS, Owner, PoolName, Result};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::{Instant, sleep_until, timeout};

use crate::balance::{excess, fair_share};
use crate::config::SyncConfig;
use crate::heartbeat::BeatState;
use crate::manager::SyncManager;
use crate::status::{Balance, RunningAccount};
use crate::worker::{Ended, StopReason, WorkerContext, supervise};

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One account this manager runs a worker for.
struct Entry {
    claim: ClaimLease,
    claimed_at: Instant,
    /// When to ask the worker to stop because the claim's period is ending.
    period_signal_at: Instant,
    stopping: Option<StopReason>,
    stop: watch::Sender<Option<StopReason>>,
}

/// What woke the loop.
enum Event {
    Shutdown,
    BeatChanged(std::result::Result<(), watch::error::RecvError>),
    WorkerEnded(std::result::Result<(tokio::task::Id, Ended), JoinError>),
    PeriodsEnding,
    Maintenance,
    Source,
    Claim,
}

/// The running manager's state, owned by one task: no lock is held across a backend call.
pub(crate) struct Engine {
    manager: SyncManager,
    beater: AbortOnDrop,
    beat: watch::Receiver<BeatState>,
    seen_lapses: u64,
    workers: JoinSet<Ended>,
    task_items: HashMap<tokio::task::Id, ItemId>,
    entries: HashMap<ItemId, Entry>,
    fair_share: usize,
    claim_at: Option<Instant>,
    maintenance_at: Instant,
    source_at: Instant,
    /// The heartbeat lapsed: no claims until every worker is gone and it is confirmed again.
    recovering: bool,
    shutting_down: bool,
}

impl Engine {
    /// The engine of `manager`, whose heartbeat task is `beater` and reports on `beat`.
    pub(crate) fn new(
        manager: SyncManager,
        beater: AbortOnDrop,
        beat: watch::Receiver<BeatState>,
    ) -> Self {
        let now = Instant::now();
        Self {
            manager,
            beater,
            beat,
            seen_lapses: 0,
            workers: JoinSet::new(),
            task_items: HashMap::new(),
            entries: HashMap::new(),
            fair_share: 0,
            claim_at: None,
            maintenance_at: now,
            source_at: now,
            recovering: false,
            shutting_down: false,
        }
    }

    /// Runs until `shutdown` completes, then leaves the pool.
    pub(crate) async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        // Nothing is claimed before the backend has a heartbeat for this identity, so that no
        // claim of ours ever looks dead.
        while !self.beat.borrow().confirmed_at(Instant::now()) {
            tokio::select! {
                biased;
                () = &mut shutdown => return self.leave().await,
                changed = self.beat.changed() => changed.map_err(|_| beat_task_failed())?,
            }
        }
        self.seen_lapses = self.beat.borrow().lapses;
        // A previous process with this identity may have left claims behind.
        self.return_leftovers().await;
        self.register().await;
        let now = Instant::now();
        self.source_at = now;
        self.maintenance_at = now + self.manager.config.startup_delay;
        loop {
            let now = Instant::now();
            let periods_at = self.next_period_signal();
            let claim_at = self.claim_at.filter(|_| self.may_claim(now));
            let maintenance_at = self.maintenance_at;
            let source_at = self.source_at;
            let event = tokio::select! {
                biased;
                () = &mut shutdown => Event::Shutdown,
                changed = self.beat.changed() => Event::BeatChanged(changed),
                Some(ended) = self.workers.join_next_with_id() => Event::WorkerEnded(ended),
                () = sleep_until(periods_at.unwrap_or(now)), if periods_at.is_some() => {
                    Event::PeriodsEnding
                }
                () = sleep_until(maintenance_at) => Event::Maintenance,
                () = sleep_until(source_at) => Event::Source,
                () = sleep_until(claim_at.unwrap_or(now)), if claim_at.is_some() => Event::Claim,
            };
            match event {
                Event::Shutdown => break,
                Event::BeatChanged(changed) => {
                    changed.map_err(|_| beat_task_failed())?;
                    self.on_beat().await;
                }
                Event::WorkerEnded(ended) => self.on_worker_ended(ended).await,
                Event::PeriodsEnding => self.end_periods(),
                Event::Maintenance => {
                    self.maintain().await;
                    self.maintenance_at = Instant::now() + self.manager.config.maintenance_interval;
                }
                Event::Source => {
                    self.sync_source().await;
                    self.source_at = Instant::now() + self.manager.config.source_interval;
                }
                Event::Claim => self.claim_one().await,
            }
        }
        self.leave().await
    }

    fn config(&self) -> &SyncConfig {
        &self.manager.config
    }

    fn identity(&self) -> &Owner {
        &self.manager.config.identity
    }

    fn pool(&self) -> &PoolName {
        &self.manager.config.pool
    }

    /// Runs a backend call with a time limit, logging a failure.
    async fn call<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Option<T> {
        match timeout(self.config().heartbeat_ttl, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::warn!(pool = %self.pool(), identity = %self.identity(), %error, "{what} failed");
                None
            }
            Err(_) => {
                tracing::warn!(pool = %self.pool(), identity = %self.identity(), "{what} timed out");
                None
            }
        }
    }

    fn may_claim(&self, now: Instant) -> bool {
        !self.shutting_down
            && !self.recovering
            && self.beat.borrow().confirmed_at(now)
            && self.entries.len() < self.fair_share
    }

    /// Schedules a claim `after` from now if this manager is below its share.
    fn want_claim(&mut self, after: Duration) {
        if self.claim_at.is_none() && self.may_claim(Instant::now()) {
            self.claim_at = Some(Instant::now() + after);
        }
    }

    async fn on_beat(&mut self) {
        let state = *self.beat.borrow_and_update();
        if state.lapses != self.seen_lapses {
            self.seen_lapses = state.lapses;
            self.recovering = true;
            self.claim_at = None;
            let items: Vec<ItemId> = self.entries.keys().cloned().collect();
            for item in items {
                // The workers drop themselves: their contexts watch the same lapse count.
                self.stop(&item, StopReason::ClaimLost);
            }
        }
        self.try_recover().await;
    }

    /// After a lapse, once every worker is gone and the heartbeat is confirmed again: returns
    /// whatever the backend still records as ours and starts over.
    async fn try_recover(&mut self) {
        if !self.recovering
            || self.shutting_down
            || !self.entries.is_empty()
            || !self.beat.borrow().confirmed_at(Instant::now())
        {
            return;
        }
        self.return_leftovers().await;
        self.register().await;
        self.recovering = false;
        self.maintenance_at = Instant::now();
        tracing::info!(pool = %self.pool(), identity = %self.identity(), "heartbeat confirmed again; claiming anew");
    }

    async fn return_leftovers(&self) {
        let returned = self
            .call(
                "returning earlier claims",
                self.manager
                    .claims
                    .release_all(self.pool(), self.identity()),
            )
            .await;
        if let Some(returned @ 1..) = returned {
            self.manager.shared.counters.claims_released.add(returned);
            tracing::info!(pool = %self.pool(), identity = %self.identity(), returned, "returned claims left from before");
        }
    }

    /// Lists this manager among those sharing the pool.
    async fn register(&self) {
        let Ok(me) = ItemId::new(self.identity().as_str()) else {
            return;
        };
        self.call(
            "registering the manager",
            self.manager.claims.add(&self.manager.members, &[me]),
        )
        .await;
    }

    fn stop(&mut self, item: &ItemId, reason: StopReason) {
        let Some(entry) = self.entries.get_mut(item) else {
            return;
        };
        if let Some(current) = entry.stopping
            && (current.is_immediate() || !reason.is_immediate())
        {
            return;
        }
        entry.stopping = Some(reason);
        entry.stop.send_replace(Some(reason));
        let counters = &self.manager.shared.counters;
        match reason {
            StopReason::Rebalance => counters.handed_back.bump(),
            StopReason::PeriodEnded => counters.periods_ended.bump(),
            StopReason::ClaimLost => counters.claims_lost.bump(),
            StopReason::Shutdown | StopReason::AccountRemoved => {}
        }
        self.manager.shared.set_running(RunningAccount {
            account: item.clone(),
            token: entry.claim.lease.token(),
            stopping: true,
        });
        tracing::info!(pool = %self.manager.config.pool, account = %item, token = %entry.claim.lease.token(), %reason, "stopping worker");
    }

    async fn on_worker_ended(
        &mut self,
        ended: std::result::Result<(tokio::task::Id, Ended), JoinError>,
    ) {
        let (id, ended) = match ended {
            Ok((id, ended)) => (id, Some(ended)),
            Err(error) => (error.id(), None),
        };
        let Some(item) = self.task_items.remove(&id) else {
            return;
        };
        let Some(entry) = self.entries.remove(&item) else {
            return;
        };
        self.manager.shared.remove_running(&item);
        let counters = &self.manager.shared.counters;
        let lost = match ended {
            None => {
                tracing::error!(pool = %self.pool(), account = %item, "worker panicked");
                counters.workers_ended_on_their_own.bump();
                false
            }
            Some(Ended::OnItsOwn) => {
                counters.workers_ended_on_their_own.bump();
                false
            }
            Some(Ended::Stopped(_)) => false,
            Some(Ended::Dropped(reason)) => {
                counters.workers_dropped.bump();
                reason == StopReason::ClaimLost
            }
        };
        let returnable = !lost
            && !matches!(
                entry.stopping,
                Some(StopReason::ClaimLost | StopReason::AccountRemoved)
            );
        if returnable {
            self.release(&entry.claim).await;
        }
        tracing::info!(pool = %self.pool(), account = %item, token = %entry.claim.lease.token(), returned = returnable, "worker ended");
        self.want_claim(self.config().claim_spacing);
        self.try_recover().await;
    }

    /// Returns one claim to the back of the unclaimed list.
    async fn release(&self, claim: &ClaimLease) {
        match timeout(
            self.config().heartbeat_ttl,
            self.manager.claims.release_claim(claim),
        )
        .await
        {
            Ok(Ok(())) => self.manager.shared.counters.claims_released.bump(),
            Ok(Err(error)) if error.is_lease_lost() => {
                tracing::info!(pool = %self.pool(), account = %claim.item, "claim was already lost");
            }
            Ok(Err(error)) => {
                tracing::warn!(pool = %self.pool(), account = %claim.item, %error, "returning the claim failed");
            }
            Err(_) => {
                tracing::warn!(pool = %self.pool(), account = %claim.item, "returning the claim timed out");
            }
        }
    }

    async fn claim_one(&mut self) {
        self.claim_at = None;
        if !self.may_claim(Instant::now()) {
            return;
        }
        let epoch = self.seen_lapses;
        let sent = Instant::now();
        let claimed = self
            .call(
                "claiming an account",
                self.manager
                    .claims
                    .claim(self.pool(), self.identity(), self.config().claim_period),
            )
            .await;
        // Nothing free, or the backend failed: the next maintenance looks again.
        let Some(Some(claim)) = claimed else {
            return;
        };
        self.manager.shared.counters.claims_taken.bump();
        let beat = *self.beat.borrow();
        if beat.lapses != epoch
            || !beat.confirmed_at(Instant::now())
            || self.shutting_down
            || self.entries.contains_key(&claim.item)
        {
            // The heartbeat lapsed meanwhile, or the old worker of this account still runs.
            self.release(&claim).await;
            return;
        }
        self.start_worker(claim, sent);
        self.want_claim(self.config().claim_spacing);
    }

    fn start_worker(&mut self, claim: ClaimLease, sent: Instant) {
        let config = &self.manager.config;
        let period_deadline = sent + config.claim_period - config.safety_margin();
        let half = sent + (period_deadline - sent) / 2;
        let period_signal_at = period_deadline
            .checked_sub(config.worker_stop_timeout)
            .filter(|at| *at > half)
            .unwrap_or(half);
        let (stop, stop_receiver) = watch::channel(None);
        let context = WorkerContext::new(
            claim.clone(),
            stop_receiver,
            self.beat.clone(),
            self.seen_lapses,
            period_deadline,
            self.manager.claims.clone(),
        );
        let worker = self.manager.factory.start(context.clone());
        let task = self
            .workers
            .spawn(supervise(worker, context, config.worker_stop_timeout));
        let token = claim.lease.token();
        tracing::info!(pool = %config.pool, account = %claim.item, %token, "claimed account; worker started");
        self.task_items.insert(task.id(), claim.item.clone());
        self.manager.shared.set_running(RunningAccount {
            account: claim.item.clone(),
            token,
            stopping: false,
        });
        self.entries.insert(
            claim.item.clone(),
            Entry {
                claim,
                claimed_at: sent,
                period_signal_at,
                stopping: None,
                stop,
            },
        );
    }

    fn next_period_signal(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|entry| entry.stopping.is_none())
            .map(|entry| entry.period_signal_at)
            .min()
    }

    fn end_periods(&mut self) {
        let now = Instant::now();
        let ending: Vec<ItemId> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.stopping.is_none() && entry.period_signal_at <= now)
            .map(|(item, _)| item.clone())
            .collect();
        for item in ending {
            self.stop(&item, StopReason::PeriodEnded);
        }
    }

    /// Reaps dead managers' accounts, checks this manager's claims against the backend, and
    /// rebalances.
    async fn maintain(&mut self) {
        if self.recovering || self.shutting_down || !self.beat.borrow().confirmed_at(Instant::now())
        {
            return;
        }
        let reaped = self
            .call("reaping", self.manager.claims.reap_dead(self.pool()))
            .await;
        if let Some(reaped) = reaped.filter(|reaped| !reaped.is_empty()) {
            self.manager.shared.counters.reaped.add(reaped.len() as u64);
            tracing::info!(pool = %self.pool(), count = reaped.len(), "returned the accounts of dead managers to the pool");
        }
        let live = self.live_managers().await;
        let snapshot_at = Instant::now();
        let Some(items) = self
            .call("listing the pool", self.manager.claims.items(self.pool()))
            .await
        else {
            return;
        };
        let me = self.identity().clone();
        let unclaimed = items.iter().filter(|item| item.holder.is_none()).count();
        let holders: HashMap<&ItemId, Option<&baton_core::Lease>> = items
            .iter()
            .map(|status| (&status.item, status.holder.as_ref()))
            .collect();
        let mut removed = Vec::new();
        let mut lost = Vec::new();
        for (item, entry) in &self.entries {
            if entry.stopping.is_some_and(StopReason::is_immediate)
                || entry.claimed_at >= snapshot_at
            {
                continue;
            }
            match holders.get(item) {
                None => removed.push(item.clone()),
                Some(Some(lease))
                    if *lease.owner() == me && lease.token() == entry.claim.lease.token() => {}
                Some(_) => lost.push(item.clone()),
            }
        }
        // Claims the backend records as ours that no worker runs under (a claim whose reply
        // was lost): return them.
        let orphans: Vec<ClaimLease> = items
            .iter()
            .filter_map(|status| {
                let lease = status
                    .holder
                    .as_ref()
                    .filter(|lease| *lease.owner() == me)?;
                let known = self
                    .entries
                    .get(&status.item)
                    .is_some_and(|entry| entry.claim.lease.token() == lease.token());
                (!known).then(|| ClaimLease {
                    pool: self.pool().clone(),
                    item: status.item.clone(),
                    lease: lease.clone(),
                })
            })
            .collect();
        let accounts = items.len();
        drop(holders);
        for item in removed {
            self.stop(&item, StopReason::AccountRemoved);
        }
        for item in lost {
            self.stop(&item, StopReason::ClaimLost);
        }
        for orphan in &orphans {
            self.release(orphan).await;
        }
        if let Some(live) = live {
            self.fair_share = fair_share(accounts, live);
            let mut active: Vec<(Instant, ItemId)> = self
                .entries
                .iter()
                .filter(|(_, entry)| entry.stopping.is_none())
                .map(|(item, entry)| (entry.claimed_at, item.clone()))
                .collect();
            active.sort();
            let surplus = excess(active.len(), self.fair_share, self.config().slack);
            for (_, item) in active.into_iter().take(surplus) {
                self.stop(&item, StopReason::Rebalance);
            }
            self.manager.shared.set_balance(Balance {
                live_managers: live,
                fair_share: self.fair_share,
                pool_accounts: accounts,
                unclaimed,
            });
        }
        if unclaimed > 0 {
            self.want_claim(Duration::ZERO);
        }
    }

    /// How many managers share the pool, this one included; forgets the ones whose heartbeat
    /// expired and lists this one if it is missing.
    async fn live_managers(&self) -> Option<usize> {
        let members = self
            .call(
                "listing the managers",
                self.manager.claims.items(&self.manager.members),
            )
            .await?;
        let mut live = 1;
        let mut listed = false;
        let mut departed = Vec::new();
        for member in &members {
            if member.item.as_str() == self.identity().as_str() {
                listed = true;
                continue;
            }
            let Ok(owner) = Owner::new(member.item.as_str()) else {
                departed.push(member.item.clone());
                continue;
            };
            match self
                .call("checking a manager", self.manager.heartbeats.alive(&owner))
                .await
            {
                Some(false) => departed.push(member.item.clone()),
                // Alive, or unknown: counting it keeps this manager from taking too much.
                Some(true) | None => live += 1,
            }
        }
        if !departed.is_empty() {
            self.call(
                "forgetting departed managers",
                self.manager.claims.remove(&self.manager.members, &departed),
            )
            .await;
        }
        if !listed {
            self.register().await;
        }
        Some(live)
    }

    /// Makes the pool hold exactly the accounts the source lists.
    async fn sync_source(&mut self) {
        let source = self.manager.source.clone();
        let accounts = match timeout(self.config().heartbeat_ttl, source.accounts()).await {
            Ok(Ok(accounts)) => accounts,
            Ok(Err(error)) => {
                tracing::warn!(pool = %self.pool(), %error, "reading the account source failed");
                return;
            }
            Err(_) => {
                tracing::warn!(pool = %self.pool(), "reading the account source timed out");
                return;
            }
        };
        let wanted: BTreeSet<ItemId> = accounts.into_iter().collect();
        let Some(items) = self
            .call("listing the pool", self.manager.claims.items(self.pool()))
            .await
        else {
            return;
        };
        let present: BTreeSet<ItemId> = items.into_iter().map(|status| status.item).collect();
        let to_add: Vec<ItemId> = wanted.difference(&present).cloned().collect();
        let to_remove: Vec<ItemId> = present.difference(&wanted).cloned().collect();
        for chunk in to_add.chunks(MAX_ITEMS) {
            let added = self
                .call(
                    "adding accounts",
                    self.manager.claims.add(self.pool(), chunk),
                )
                .await;
            if let Some(added) = added {
                self.manager.shared.counters.accounts_added.add(added);
            }
        }
        for chunk in to_remove.chunks(MAX_ITEMS) {
            let removed = self
                .call(
                    "removing accounts",
                    self.manager.claims.remove(self.pool(), chunk),
                )
                .await;
            if let Some(removed) = removed {
                self.manager.shared.counters.accounts_removed.add(removed);
            }
        }
        if !to_add.is_empty() || !to_remove.is_empty() {
            tracing::info!(pool = %self.pool(), added = to_add.len(), removed = to_remove.len(), "made the pool match the account source");
        }
        for item in &to_remove {
            self.stop(item, StopReason::AccountRemoved);
        }
        if !to_add.is_empty() {
            self.want_claim(Duration::ZERO);
        }
    }

    /// Stops every worker, returns every claim, leaves the pool and forgets the heartbeat.
    async fn leave(&mut self) -> Result<()> {
        self.shutting_down = true;
        self.claim_at = None;
        let items: Vec<ItemId> = self.entries.keys().cloned().collect();
        for item in items {
            self.stop(&item, StopReason::Shutdown);
        }
        // The heartbeat goes on until every claim is back, so that none looks dead meanwhile.
        while let Some(ended) = self.workers.join_next_with_id().await {
            self.on_worker_ended(ended).await;
        }
        let claims = &self.manager.claims;
        let swept = timeout(
            self.config().heartbeat_ttl,
            claims.release_all(self.pool(), self.identity()),
        )
        .await;
        if let Ok(me) = ItemId::new(self.identity().as_str()) {
            self.call(
                "leaving the managers",
                claims.remove(&self.manager.members, &[me]),
            )
            .await;
        }
        self.beater.0.abort();
        self.call(
            "forgetting the heartbeat",
            self.manager.heartbeats.forget(self.identity()),
        )
        .await;
        let result = match swept {
            Ok(Ok(returned)) => {
                self.manager.shared.counters.claims_released.add(returned);
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(elapsed) => Err(Error::transient(elapsed)),
        };
        tracing::info!(pool = %self.pool(), identity = %self.identity(), ok = result.is_ok(), "left the pool");
        result
    }
}

fn beat_task_failed() -> Error {
    Error::Backend {
        message: "the heartbeat task stopped".to_owned(),
        transient: false,
        source: None,
    }
}
