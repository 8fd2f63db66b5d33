//! The control handle of [`Faulty`](super::Faulty): what the next calls do.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// What a call to a faulty backend does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Calls reach the inner backend and return its answer.
    #[default]
    Pass,
    /// Calls return a transient [`Error::Backend`](baton_core::Error::Backend) without
    /// reaching the inner backend: nothing changes.
    Fail,
    /// Calls wait until the mode changes (or their operation is no longer targeted), then
    /// behave as the new mode says.
    Stall,
    /// Calls reach the inner backend, whose answer is thrown away and replaced by a transient
    /// [`Error::Backend`](baton_core::Error::Backend): the operation took effect but the
    /// caller does not know.
    DropReply,
}

/// A trait method that faults can be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Heartbeat::beat`](baton_core::Heartbeat::beat).
    Beat,
    /// [`Heartbeat::alive`](baton_core::Heartbeat::alive).
    Alive,
    /// [`Heartbeat::dead_owners`](baton_core::Heartbeat::dead_owners).
    DeadOwners,
    /// [`Heartbeat::last_beat`](baton_core::Heartbeat::last_beat).
    LastBeat,
    /// [`Heartbeat::forget`](baton_core::Heartbeat::forget).
    Forget,
    /// [`Claim::add`](baton_core::Claim::add).
    Add,
    /// [`Claim::remove`](baton_core::Claim::remove).
    Remove,
    /// [`Claim::items`](baton_core::Claim::items).
    Items,
    /// [`Claim::claim`](baton_core::Claim::claim).
    Claim,
    /// [`Claim::renew_claim`](baton_core::Claim::renew_claim).
    RenewClaim,
    /// [`Claim::release_claim`](baton_core::Claim::release_claim).
    ReleaseClaim,
    /// [`Claim::release_all`](baton_core::Claim::release_all).
    ReleaseAll,
    /// [`Claim::reap_dead`](baton_core::Claim::reap_dead).
    ReapDead,
    /// [`Lock::acquire`](baton_core::Lock::acquire).
    Acquire,
    /// [`Lock::renew_lock`](baton_core::Lock::renew_lock).
    RenewLock,
    /// [`Lock::release_lock`](baton_core::Lock::release_lock).
    ReleaseLock,
    /// [`Lock::holders`](baton_core::Lock::holders).
    Holders,
    /// [`Queue::enqueue`](baton_core::Queue::enqueue).
    Enqueue,
    /// [`Queue::enqueue_batch`](baton_core::Queue::enqueue_batch).
    EnqueueBatch,
    /// [`Queue::reserve`](baton_core::Queue::reserve).
    Reserve,
    /// [`Queue::touch`](baton_core::Queue::touch).
    Touch,
    /// [`Queue::complete`](baton_core::Queue::complete).
    Complete,
    /// [`Queue::fail`](baton_core::Queue::fail).
    Fail,
    /// [`Queue::cancel`](baton_core::Queue::cancel).
    Cancel,
    /// [`Queue::retry`](baton_core::Queue::retry).
    Retry,
    /// [`Queue::pause`](baton_core::Queue::pause).
    Pause,
    /// [`Queue::resume`](baton_core::Queue::resume).
    Resume,
    /// [`Queue::paused`](baton_core::Queue::paused).
    Paused,
    /// [`Queue::queues`](baton_core::Queue::queues).
    Queues,
    /// [`Queue::list`](baton_core::Queue::list).
    List,
    /// [`Queue::get`](baton_core::Queue::get).
    Get,
    /// [`Queue::last`](baton_core::Queue::last).
    Last,
    /// [`Queue::counts`](baton_core::Queue::counts).
    Counts,
    /// [`Queue::requeue_expired`](baton_core::Queue::requeue_expired).
    RequeueExpired,
    /// [`Queue::purge_finished`](baton_core::Queue::purge_finished).
    PurgeFinished,
    /// [`Dispatch::wake`](baton_core::Dispatch::wake).
    Wake,
    /// [`Dispatch::wakeups`](baton_core::Dispatch::wakeups) (opening the stream only).
    Wakeups,
    /// [`Dispatch::publish`](baton_core::Dispatch::publish).
    Publish,
    /// [`Dispatch::subscribe`](baton_core::Dispatch::subscribe) (opening the stream only).
    Subscribe,
}

impl Op {
    /// Every operation, trait by trait.
    pub const ALL: [Self; 39] = [
        Self::Beat,
        Self::Alive,
        Self::DeadOwners,
        Self::LastBeat,
        Self::Forget,
        Self::Add,
        Self::Remove,
        Self::Items,
        Self::Claim,
        Self::RenewClaim,
        Self::ReleaseClaim,
        Self::ReleaseAll,
        Self::ReapDead,
        Self::Acquire,
        Self::RenewLock,
        Self::ReleaseLock,
        Self::Holders,
        Self::Enqueue,
        Self::EnqueueBatch,
        Self::Reserve,
        Self::Touch,
        Self::Complete,
        Self::Fail,
        Self::Cancel,
        Self::Retry,
        Self::Pause,
        Self::Resume,
        Self::Paused,
        Self::Queues,
        Self::List,
        Self::Get,
        Self::Last,
        Self::Counts,
        Self::RequeueExpired,
        Self::PurgeFinished,
        Self::Wake,
        Self::Wakeups,
        Self::Publish,
        Self::Subscribe,
    ];

    /// The operation's name, as the trait method is named (`Trait::method`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Beat => "Heartbeat::beat",
            Self::Alive => "Heartbeat::alive",
            Self::DeadOwners => "Heartbeat::dead_owners",
            Self::LastBeat => "Heartbeat::last_beat",
            Self::Forget => "Heartbeat::forget",
            Self::Add => "Claim::add",
            Self::Remove => "Claim::remove",
            Self::Items => "Claim::items",
            Self::Claim => "Claim::claim",
            Self::RenewClaim => "Claim::renew_claim",
            Self::ReleaseClaim => "Claim::release_claim",
            Self::ReleaseAll => "Claim::release_all",
            Self::ReapDead => "Claim::reap_dead",
            Self::Acquire => "Lock::acquire",
            Self::RenewLock => "Lock::renew_lock",
            Self::ReleaseLock => "Lock::release_lock",
            Self::Holders => "Lock::holders",
            Self::Enqueue => "Queue::enqueue",
            Self::EnqueueBatch => "Queue::enqueue_batch",
            Self::Reserve => "Queue::reserve",
            Self::Touch => "Queue::touch",
            Self::Complete => "Queue::complete",
            Self::Fail => "Queue::fail",
            Self::Cancel => "Queue::cancel",
            Self::Retry => "Queue::retry",
            Self::Pause => "Queue::pause",
            Self::Resume => "Queue::resume",
            Self::Paused => "Queue::paused",
            Self::Queues => "Queue::queues",
            Self::List => "Queue::list",
            Self::Get => "Queue::get",
            Self::Last => "Queue::last",
            Self::Counts => "Queue::counts",
            Self::RequeueExpired => "Queue::requeue_expired",
            Self::PurgeFinished => "Queue::purge_finished",
            Self::Wake => "Dispatch::wake",
            Self::Wakeups => "Dispatch::wakeups",
            Self::Publish => "Dispatch::publish",
            Self::Subscribe => "Dispatch::subscribe",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cloneable handle that tells a [`Faulty`](super::Faulty) backend what its calls do.
///
/// Faults apply to the targeted operations only: every operation until
/// [`only`](FaultControl::only) narrows them.
#[derive(Debug, Clone)]
pub struct FaultControl {
    state: Arc<watch::Sender<State>>,
}

#[derive(Debug, Default)]
struct State {
    mode: Mode,
    only: Option<HashSet<Op>>,
    fail_next: u64,
    stalled: usize,
    injected: u64,
}

impl State {
    fn targets(&self, op: Op) -> bool {
        self.only.as_ref().is_none_or(|ops| ops.contains(&op))
    }
}

/// What a call does, as decided on entry.
pub(super) enum Decision {
    Proceed,
    Fail,
    DropReply,
}

impl Default for FaultControl {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultControl {
    /// A control in [`Mode::Pass`] targeting every operation.
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::default())),
        }
    }

    /// Sets what targeted calls do from now on; stalled calls re-decide under the new mode.
    pub fn set_mode(&self, mode: Mode) {
        self.state.send_modify(|state| state.mode = mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.state.borrow().mode
    }

    /// Makes the next `count` targeted calls fail as in [`Mode::Fail`], whatever the mode;
    /// later calls follow the mode again.
    pub fn fail_next(&self, count: u64) {
        self.state.send_modify(|state| state.fail_next = count);
    }

    /// Restricts faults to `ops`; other operations always pass.
    pub fn only(&self, ops: impl IntoIterator<Item = Op>) {
        let ops: HashSet<Op> = ops.into_iter().collect();
        self.state.send_modify(|state| state.only = Some(ops));
    }

    /// Lets faults apply to every operation again.
    pub fn all_ops(&self) {
        self.state.send_modify(|state| state.only = None);
    }

    /// Back to passing every call: [`Mode::Pass`], every operation targeted, no pending
    /// [`fail_next`](FaultControl::fail_next). Stalled calls proceed.
    pub fn heal(&self) {
        self.state.send_modify(|state| {
            state.mode = Mode::Pass;
            state.only = None;
            state.fail_next = 0;
        });
    }

    /// How many calls are stalled right now.
    pub fn stalled(&self) -> usize {
        self.state.borrow().stalled
    }

    /// Waits until at least `count` calls are stalled: an event to wait for, instead of
    /// sleeping and hoping a call has reached the stall.
    pub async fn wait_for_stalled(&self, count: usize) {
        let mut changes = self.state.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = changes.wait_for(|state| state.stalled >= count).await;
    }

    /// How many faults (failures and dropped replies) have been injected so far.
    pub fn injected(&self) -> u64 {
        self.state.borrow().injected
    }

    /// Decides what a call of `op` does, stalling first if the mode says so.
    pub(super) async fn enter(&self, op: Op) -> Decision {
        let mut changes = self.state.subscribe();
        loop {
            let mut entry = Entry::Decided(Decision::Proceed);
            self.state.send_if_modified(|state| {
                if !state.targets(op) {
                    return false;
                }
                if state.fail_next > 0 {
                    state.fail_next -= 1;
                    state.injected += 1;
                    entry = Entry::Decided(Decision::Fail);
                    return true;
                }
                match state.mode {
                    Mode::Pass => false,
                    Mode::Fail => {
                        state.injected += 1;
                        entry = Entry::Decided(Decision::Fail);
                        true
                    }
                    Mode::DropReply => {
                        state.injected += 1;
                        entry = Entry::Decided(Decision::DropReply);
                        true
                    }
                    Mode::Stall => {
                        state.stalled += 1;
                        entry = Entry::Stall;
                        true
                    }
                }
            });
            if let Entry::Decided(decision) = entry {
                return decision;
            }
            let _release = StallGuard { control: self };
            // The sender lives as long as `self`, so the wait cannot fail.
            let _ = changes
                .wait_for(|state| !(state.mode == Mode::Stall && state.targets(op)))
                .await;
        }
    }
}

/// How a call enters: decided at once, or stalled until the mode changes.
enum Entry {
    Decided(Decision),
    Stall,
}

/// Counts a stalled call out again when it stops waiting, even if its caller gave up.
struct StallGuard<'a> {
    control: &'a FaultControl,
}

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        self.control
            .state
            .send_modify(|state| state.stalled = state.stalled.saturating_sub(1));
    }
}
