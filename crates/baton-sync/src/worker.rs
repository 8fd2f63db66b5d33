//! Workers: what a [`SyncManager`](crate::SyncManager) runs for each account it claims, and
//! the [`WorkerContext`] it hands them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Claim, ClaimLease, FencingToken, ItemId, MIN_TTL, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::heartbeat::BeatState;

/// Why a worker was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The manager is shutting down and will return the account to the pool.
    Shutdown,
    /// The manager holds more than its fair share and hands this account back.
    Rebalance,
    /// The claim reached the end of its [`claim_period`](crate::SyncConfig::claim_period); the
    /// account goes to the back of the unclaimed list.
    PeriodEnded,
    /// The account left the [`AccountSource`](crate::AccountSource) and the pool.
    AccountRemoved,
    /// The claim may be someone else's: the manager's heartbeat lapsed, or the backend no
    /// longer records the claim. The worker is dropped at once; its token is stale.
    ClaimLost,
}

impl StopReason {
    /// Whether the worker is dropped at once instead of being given time to finish.
    pub fn is_immediate(self) -> bool {
        matches!(self, Self::ClaimLost)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shutdown => "shutdown",
            Self::Rebalance => "rebalance",
            Self::PeriodEnded => "claim period ended",
            Self::AccountRemoved => "account removed",
            Self::ClaimLost => "claim lost",
        })
    }
}

/// What a worker gets: its account, the claim and its fencing token, and a cancellation
/// signal. Clones share the signal, so a worker can hand one to each task it spawns.
#[derive(Clone)]
pub struct WorkerContext {
    claim: ClaimLease,
    stop: watch::Receiver<Option<StopReason>>,
    beat: watch::Receiver<BeatState>,
    epoch: u64,
    period_deadline: Instant,
    claims: Arc<dyn Claim>,
}

impl WorkerContext {
    pub(crate) fn new(
        claim: ClaimLease,
        stop: watch::Receiver<Option<StopReason>>,
        beat: watch::Receiver<BeatState>,
        epoch: u64,
        period_deadline: Instant,
        claims: Arc<dyn Claim>,
    ) -> Self {
        Self {
            claim,
            stop,
            beat,
            epoch,
            period_deadline,
            claims,
        }
    }

    /// The account this worker syncs.
    pub fn account(&self) -> &ItemId {
        &self.claim.item
    }

    /// The claim's fencing token: pass it with every write to a downstream resource, which
    /// should refuse a token lower than the highest it has seen for this account.
    pub fn token(&self) -> FencingToken {
        self.claim.lease.token()
    }

    /// The claim itself, as the backend granted it.
    pub fn claim(&self) -> &ClaimLease {
        &self.claim
    }

    /// Why the worker was asked to stop, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        if self.beat.borrow().lapses != self.epoch {
            return Some(StopReason::ClaimLost);
        }
        *self.stop.borrow()
    }

    /// Whether the worker was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.stop_reason().is_some()
    }

    /// Waits until the worker is asked to stop, and says why. Use it in a `select!` beside the
    /// worker's own waits.
    pub async fn cancelled(&self) -> StopReason {
        let mut stop = self.stop.clone();
        let mut beat = self.beat.clone();
        let epoch = self.epoch;
        tokio::select! {
            reason = stop.wait_for(Option::is_some) => match reason {
                Ok(reason) => reason.unwrap_or(StopReason::Shutdown),
                // The manager is gone: nothing will return the account but the reaper.
                Err(_) => StopReason::Shutdown,
            },
            _ = beat.wait_for(|beat| beat.lapses != epoch) => StopReason::ClaimLost,
        }
    }

    /// Whether, by this process's own clock, the claim is still held: not cancelled, the
    /// manager's heartbeat confirmed, the claim period not over. It errs on the side of
    /// `false`: it turns false before the backend could hand the account to anyone else.
    pub fn is_current(&self) -> bool {
        let now = Instant::now();
        let beat = *self.beat.borrow();
        !self.is_cancelled()
            && beat.lapses == self.epoch
            && beat.confirmed_until.is_some_and(|until| now < until)
            && now < self.period_deadline
    }

    /// Asks the backend whether the claim is still this worker's (renewing it, without moving
    /// the end of its period).
    ///
    /// # Errors
    ///
    /// `LeaseLost` if the claim is no longer current, by this process's clock (see
    /// [`is_current`](Self::is_current)) or by the backend's: the token is stale and every
    /// downstream resource should refuse it. `Backend` if the backend could not answer.
    pub async fn confirm(&self) -> Result<()> {
        if !self.is_current() {
            return Err(self.claim.lost());
        }
        let remaining = self
            .period_deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_TTL);
        self.claims.renew_claim(&self.claim, remaining).await?;
        Ok(())
    }

    pub(crate) fn period_deadline(&self) -> Instant {
        self.period_deadline
    }
}

impl fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerContext")
            .field("account", &self.claim.item)
            .field("token", &self.claim.lease.token())
            .field("stop_reason", &self.stop_reason())
            .finish_non_exhaustive()
    }
}

/// A running worker, as a boxed future.
pub type WorkerFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts the long-lived worker of one claimed account.
///
/// The worker runs until it returns on its own (the account then goes back to the pool) or is
/// asked to stop through its [`WorkerContext`]. Any `Fn(WorkerContext) -> impl Future<Output =
/// ()>` is a factory.
pub trait WorkerFactory: Send + Sync + 'static {
    /// The worker for the account in `context`.
    fn start(&self, context: WorkerContext) -> WorkerFuture;
}

impl<F, Fut> WorkerFactory for F
where
    F: Fn(WorkerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn start(&self, context: WorkerContext) -> WorkerFuture {
        Box::pin(self(context))
    }
}

/// How a worker's task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It returned without being asked to.
    OnItsOwn,
    /// It returned after being asked to stop.
    Stopped(StopReason),
    /// It was dropped: its claim was lost, or it did not stop in time.
    Dropped(StopReason),
}

/// Runs a worker until it ends on its own or is stopped; drops it at once if the claim is lost
/// or its period's hard end passes, and after `grace` if it ignores a request to stop.
pub(crate) async fn supervise(
    worker: WorkerFuture,
    context: WorkerContext,
    grace: Duration,
) -> Ended {
    let mut worker = worker;
    let hard_end = context.period_deadline();
    let reason = tokio::select! {
        biased;
        reason = context.cancelled() => reason,
        () = tokio::time::sleep_until(hard_end) => return Ended::Dropped(StopReason::PeriodEnded),
        () = &mut worker => return Ended::OnItsOwn,
    };
    if reason.is_immediate() {
        return Ended::Dropped(reason);
    }
    let mut beat = context.beat.clone();
    let mut stop = context.stop.clone();
    let epoch = context.epoch;
    tokio::select! {
        biased;
        _ = beat.wait_for(|beat| beat.lapses != epoch) => Ended::Dropped(StopReason::ClaimLost),
        _ = stop.wait_for(|reason| reason.is_some_and(StopReason::is_immediate)) => {
            Ended::Dropped(StopReason::ClaimLost)
        }
        () = tokio::time::sleep_until(hard_end) => Ended::Dropped(reason),
        () = &mut worker => Ended::Stopped(reason),
        () = tokio::time::sleep(grace) => Ended::Dropped(reason),
    }
}
