//! Fair, all-or-nothing acquisition of a set of locks, and the held set that renews itself.
//!
//! The [`Lock`] trait grants a free set to whoever asks first and keeps no line of waiters, so
//! a waiter for a busy lock could be overtaken forever by newcomers. [`FairLocks`] keeps the
//! line in the backend itself, with the bakery algorithm built from locks:
//!
//! 1. **Take a ticket.** The waiter locks `~ticket:<name>` for every name it wants, all at once;
//!    the grant's fencing token `T` is greater than every earlier grant of each of those ticket
//!    locks, so `T` is a number drawn after every earlier waiter for any of the same names.
//! 2. **Stand in line.** Still holding the tickets, it locks one queue entry per name,
//!    `~queue:<slot>:<name>` with the lowest slot free for that name, whose reason carries
//!    `T` and the waiter's own reason (so that others see who waits and in which order); then it
//!    frees the tickets. A later waiter for any of these names can draw its ticket only
//!    afterwards, so it draws a larger number and finds this entry already in line. Slots are
//!    reused, so a name never has more entry rows than it ever had waiters at once.
//! 3. **Wait for its turn.** It is this waiter's turn once no live queue entry of any of its
//!    names carries a smaller ticket. Only then does it ask for the names themselves, waiting
//!    for their holders to finish; then it frees its queue entries. Tickets only disappear from
//!    the line while it waits (a smaller one can no longer be drawn), so once it is its turn it
//!    stays so.
//!
//! Queue entries are leases like any other: renewed while their waiter waits, so a waiter that
//! dies leaves the line when its entries expire.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{
    Acquire, Error, FencingToken, Lock, LockHolder, LockLease, LockName, LockRequest, Owner,
    Result, validate_ttl,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::names::{self, check_task_lock, parse_queue_entry};

/// The longest a waiter waits for a ticket lock, which is held only for two backend calls.
const TICKET_WAIT: Duration = Duration::from_secs(10);
/// The longest a ticket lock is leased for: if its holder dies mid-way, the line moves on.
const TICKET_TTL: Duration = Duration::from_secs(5);

/// How long to wait for a set of locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Take them now or give up (still in line: a waiter that came earlier keeps its turn).
    NoWait,
    /// Wait at most this long.
    For(Duration),
    /// Wait until they are had.
    Forever,
}

/// Timings of held locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSettings {
    /// The lease of held locks and queue entries; renewed every quarter of it. If the holder
    /// dies, others wait at most this long.
    pub ttl: Duration,
    /// How often a waiter looks at the line while a waiter ahead of it waits.
    pub poll_interval: Duration,
    /// How long before the lease could run out a holder whose renewals fail is told to stop
    /// ([`HeldLocks::lost`]): at least the time it needs to stop what it does.
    pub stop_margin: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            stop_margin: Duration::from_secs(12),
        }
    }
}

impl LockSettings {
    /// Checks the timings: a valid TTL, a poll interval below it, a stop margin under half of it.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the bad timing.
    pub fn validate(&self) -> Result<()> {
        validate_ttl(self.ttl)?;
        if self.poll_interval.is_zero() || self.poll_interval >= self.ttl {
            return Err(Error::invalid(
                "poll interval must be above zero and below the lock ttl",
            ));
        }
        if self.stop_margin >= self.ttl / 2 {
            return Err(Error::invalid(format!(
                "stop margin of {:?} must be under half the lock ttl of {:?}",
                self.stop_margin, self.ttl
            )));
        }
        Ok(())
    }
}

/// Why a set of locks could not be had yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Who holds some of the wanted locks.
    pub holders: Vec<LockHolder>,
    /// Waiters in line ahead of this one (their queue entries), for names it also wants.
    pub ahead: Vec<LockHolder>,
}

impl Blocked {
    /// What a person waiting is told: "waiting for task 17 (backup of app 42) to finish".
    pub fn message(&self) -> String {
        let holders = describe(&self.holders);
        let ahead = describe(&self.ahead);
        match (holders.is_empty(), ahead.is_empty()) {
            (false, true) => format!("waiting for {} to finish", holders.join(" and ")),
            (false, false) => format!(
                "waiting for {} to finish, behind {} queued earlier",
                holders.join(" and "),
                ahead.join(" and ")
            ),
            (true, false) => format!("waiting behind {} queued earlier", ahead.join(" and ")),
            (true, true) => "waiting for the locks to be free".to_owned(),
        }
    }
}

/// One description per grant (a grant covers several names and shows once per name): its
/// reason, or its owner. Tokens count per name, so two grants of one owner on different names
/// may share a token: the reason tells them apart.
fn describe(holders: &[LockHolder]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for holder in holders {
        let grant = (
            holder.lease.owner().clone(),
            holder.lease.token(),
            &holder.reason,
        );
        if !seen.insert(grant) {
            continue;
        }
        if holder.reason.is_empty() {
            out.push(format!("{}", holder.lease.owner()));
        } else {
            out.push(holder.reason.clone());
        }
    }
    out
}

/// The outcome of [`FairLocks::acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// Every lock is held and renewed until released.
    Granted(HeldLocks),
    /// The wait ran out; nothing is held and this waiter left the line.
    Busy(Blocked),
    /// The caller cancelled the wait; nothing is held and this waiter left the line.
    Cancelled,
}

/// Fair acquisition of lock sets for one owner on a [`Lock`] backend (see the module docs).
///
/// The guarantee, among everyone who takes locks through `FairLocks` on the same backend: if
/// waiter A drew its ticket before waiter B and they want a common name, B is not granted its
/// locks before A is granted its own or leaves the line (it gave up, was cancelled, or died and
/// its queue entries expired after their TTL). A waiter is therefore never overtaken by one
/// that came later, and waits at most for the holders and the waiters that were already there
/// when it came: no starvation, across processes and hosts as within one runner.
///
/// What it costs: a waiter waits behind an earlier waiter for a common name even when its own
/// names are free (head-of-line blocking), since letting it pass could starve the earlier one.
///
/// What it does not cover: whoever calls [`Lock::acquire`] on the same names directly is not in
/// the line and can overtake it; a waiter that stalls longer than the TTL loses its place (its
/// wait then fails with `LeaseLost`). Mutual exclusion never depends on the line: it is the
/// backend's, per name.
pub struct FairLocks<B: ?Sized> {
    backend: Arc<B>,
    owner: Owner,
    settings: LockSettings,
}

impl<B: ?Sized> Clone for FairLocks<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            owner: self.owner.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<B: Lock + ?Sized + 'static> FairLocks<B> {
    /// Fair locks taken by `owner` on `backend`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for bad `settings` (see [`LockSettings::validate`]).
    pub fn new(backend: Arc<B>, owner: Owner, settings: LockSettings) -> Result<Self> {
        settings.validate()?;
        Ok(Self {
            backend,
            owner,
            settings,
        })
    }

    /// The owner every grant is made to.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The timings.
    pub fn settings(&self) -> &LockSettings {
        &self.settings
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Takes every lock in `names` once it is this waiter's turn and they are free, waiting as
    /// `wait` says; `on_wait` hears why whenever that changes; `cancel` turning true gives up.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a name [`names::task_lock`] refuses, no names, or a bad reason;
    /// `Backend` if the backend failed (this waiter then leaves the line at once, or when its
    /// entries expire).
    pub async fn acquire(
        &self,
        names: &[LockName],
        reason: &str,
        wait: Wait,
        on_wait: &mut (dyn FnMut(&Blocked) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Acquired> {
        for name in names {
            check_task_lock(name)?;
        }
        let request =
            LockRequest::new(names.iter().cloned(), self.owner.clone(), self.settings.ttl)?
                .with_reason(reason)?;
        let deadline = match wait {
            Wait::NoWait => Some(Instant::now()),
            Wait::For(wait) => Some(Instant::now() + wait),
            Wait::Forever => None,
        };
        let mut entry = match self.stand_in_line(&request, deadline, cancel).await? {
            Line::Entered(entry) => entry,
            Line::Cancelled => return Ok(Acquired::Cancelled),
            Line::Busy(blocked) => return Ok(Acquired::Busy(blocked)),
        };
        let outcome = self
            .wait_for_turn(&request, &mut entry, deadline, on_wait, cancel)
            .await;
        if let Err(error) = self.backend.release_lock(&entry.lease).await {
            tracing::debug!(%error, "could not leave the line; the queue entries will expire");
        }
        outcome
    }

    /// Draws a ticket and enters the line.
    async fn stand_in_line(
        &self,
        request: &LockRequest,
        deadline: Option<Instant>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Line> {
        let tickets = request
            .names()
            .iter()
            .map(names::ticket)
            .collect::<Result<Vec<_>>>()?;
        let ticket_wait = deadline
            .map_or(TICKET_WAIT, |d| d.saturating_duration_since(Instant::now()))
            .max(TICKET_WAIT);
        let ticket_request = LockRequest::new(
            tickets,
            self.owner.clone(),
            self.settings.ttl.min(TICKET_TTL),
        )?
        .with_reason(request.reason())?
        .with_wait(ticket_wait);
        let ticket = loop {
            let acquire = self.backend.acquire(&ticket_request);
            let expired = || deadline.is_some_and(|d| Instant::now() >= d);
            tokio::select! {
                outcome = acquire => match outcome {
                    Ok(Acquire::Granted(ticket)) => break ticket,
                    Ok(Acquire::Busy(holders)) if expired() => {
                        return Ok(Line::Busy(Blocked { holders, ahead: Vec::new() }));
                    }
                    Ok(Acquire::Busy(holders)) => {
                        tracing::warn!(?holders, "waited {ticket_wait:?} for a queue ticket; trying again");
                    }
                    Err(error) if error.is_retryable() && !expired() => {
                        tracing::warn!(%error, "could not draw a queue ticket; trying again");
                        tokio::time::sleep(self.settings.poll_interval).await;
                    }
                    Err(error) => return Err(error),
                },
                _ = cancelled(cancel) => return Ok(Line::Cancelled),
            }
        };
        let number = ticket.lease.token().get();
        let entered = self.enter(request, number).await;
        if let Err(error) = self.backend.release_lock(&ticket).await {
            tracing::debug!(%error, "could not free the queue ticket; it will expire");
        }
        Ok(Line::Entered(entered?))
    }

    /// Takes the lowest free queue slot of each wanted name, for the holder of ticket `number`
    /// (which holds the ticket locks of those names, so nobody else takes their slots now).
    async fn enter(&self, request: &LockRequest, number: u64) -> Result<Entry> {
        let mut attempts = 0;
        loop {
            let all = self.backend.holders().await?;
            let mut entries = Vec::new();
            for name in request.names() {
                let taken: BTreeSet<usize> = all
                    .iter()
                    .filter_map(parse_queue_entry)
                    .filter(|entry| &entry.name == name)
                    .map(|entry| entry.slot)
                    .collect();
                let slot = (0..).find(|slot| !taken.contains(slot)).unwrap_or(0);
                entries.push(names::queue_entry(name, slot)?);
            }
            let entry_request = LockRequest::new(entries, self.owner.clone(), self.settings.ttl)?
                .with_reason(names::queue_reason(number, request.reason()))?;
            match self.backend.acquire(&entry_request).await? {
                Acquire::Granted(lease) => {
                    return Ok(Entry {
                        ticket: number,
                        lease,
                        renewed_at: Instant::now(),
                    });
                }
                // Only if this waiter's ticket expired under it and another took the slot.
                Acquire::Busy(holders) if attempts < 5 => {
                    attempts += 1;
                    tracing::warn!(?holders, "queue slot taken; choosing again");
                }
                Acquire::Busy(holders) => {
                    return Err(Error::conflict(format!(
                        "queue slots of {} stay taken",
                        holders
                            .first()
                            .map_or_else(String::new, |h| h.name.to_string())
                    )));
                }
            }
        }
    }

    async fn wait_for_turn(
        &self,
        request: &LockRequest,
        entry: &mut Entry,
        deadline: Option<Instant>,
        on_wait: &mut (dyn FnMut(&Blocked) + Send),
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Acquired> {
        let mut last_told: Option<String> = None;
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let step = remaining.map_or(self.settings.poll_interval, |r| {
                r.min(self.settings.poll_interval)
            });
            // Not raced against `cancel`: an attempt dropped half-way could leave a grant
            // behind; an attempt lasts at most `step` and one backend call.
            if *cancel.borrow() {
                return Ok(Acquired::Cancelled);
            }
            let outcome = self.turn(request, entry, step).await;
            let blocked = match outcome {
                Ok(Turn::Granted(lease)) => {
                    return Ok(Acquired::Granted(HeldLocks::start(self, lease)));
                }
                Ok(Turn::Blocked(blocked)) => Some(blocked),
                Err(error) if error.is_retryable() && !error.is_lease_lost() => {
                    tracing::warn!(%error, "could not look at the line; trying again");
                    None
                }
                Err(error) => return Err(error),
            };
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            match blocked {
                Some(blocked) if expired => return Ok(Acquired::Busy(blocked)),
                None if expired => {
                    return Ok(Acquired::Busy(Blocked {
                        holders: Vec::new(),
                        ahead: Vec::new(),
                    }));
                }
                Some(blocked) => {
                    let message = blocked.message();
                    if last_told.as_ref() != Some(&message) {
                        on_wait(&blocked);
                        last_told = Some(message);
                    }
                    if blocked.ahead.is_empty() {
                        // The attempt itself waited `step`.
                        continue;
                    }
                }
                None => {}
            }
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                _ = cancelled(cancel) => return Ok(Acquired::Cancelled),
            }
        }
    }

    /// One look at the line, and an attempt at the locks waiting up to `step` if it is this
    /// waiter's turn.
    async fn turn(&self, request: &LockRequest, entry: &mut Entry, step: Duration) -> Result<Turn> {
        if entry.renewed_at.elapsed() >= self.settings.ttl / 4 {
            let started = Instant::now();
            entry.lease = self
                .backend
                .renew_lock(&entry.lease, self.settings.ttl)
                .await?;
            entry.renewed_at = started;
        }
        let wanted: BTreeSet<&LockName> = request.names().iter().collect();
        let all = self.backend.holders().await?;
        let ahead: Vec<LockHolder> = all
            .iter()
            .filter_map(parse_queue_entry)
            .filter(|queued| queued.ticket < entry.ticket && wanted.contains(&queued.name))
            .map(|queued| LockHolder {
                name: queued.name,
                reason: queued.reason,
                ..queued.holder
            })
            .collect();
        if !ahead.is_empty() {
            let holders = all
                .into_iter()
                .filter(|holder| wanted.contains(&holder.name))
                .collect();
            return Ok(Turn::Blocked(Blocked { holders, ahead }));
        }
        let attempt = request.clone().with_wait(step);
        Ok(match self.backend.acquire(&attempt).await? {
            Acquire::Granted(lease) => Turn::Granted(lease),
            Acquire::Busy(holders) => Turn::Blocked(Blocked {
                holders,
                ahead: Vec::new(),
            }),
        })
    }
}

/// The outcome of [`FairLocks::stand_in_line`].
enum Line {
    Entered(Entry),
    Cancelled,
    Busy(Blocked),
}

/// The outcome of one [`FairLocks::turn`].
enum Turn {
    Granted(LockLease),
    Blocked(Blocked),
}

/// Resolves once `cancel` reads true (never, if its sender is gone while false).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// This waiter's place in line.
struct Entry {
    ticket: u64,
    lease: LockLease,
    renewed_at: Instant,
}

/// A held set of locks, renewed in the background until [released](HeldLocks::release).
///
/// Dropping it stops the renewals without releasing: the locks then expire after their TTL.
pub struct HeldLocks {
    lease: Arc<Mutex<LockLease>>,
    token: FencingToken,
    lost: watch::Receiver<Option<String>>,
    keeper: Option<JoinHandle<()>>,
    release: Arc<dyn Fn(LockLease) -> ReleaseFuture + Send + Sync>,
}

type ReleaseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

impl HeldLocks {
    fn start<B: Lock + ?Sized + 'static>(locks: &FairLocks<B>, lease: LockLease) -> Self {
        let token = lease.lease.token();
        let shared = Arc::new(Mutex::new(lease));
        let (lost_tx, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep(
            locks.backend.clone(),
            locks.settings.clone(),
            shared.clone(),
            lost_tx,
        ));
        let backend = locks.backend.clone();
        let release = Arc::new(move |lease: LockLease| -> ReleaseFuture {
            let backend = backend.clone();
            Box::pin(async move { backend.release_lock(&lease).await })
        });
        Self {
            lease: shared,
            token,
            lost,
            keeper: Some(keeper),
            release,
        }
    }

    /// The grant's fencing token: hand it to whatever the holder writes to.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The current lease (its expiry moves with each renewal).
    pub fn lease(&self) -> LockLease {
        self.lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Why the locks are lost, once they are: a renewal was refused, or renewals failed until
    /// the lease came within the stop margin of its expiry. Whoever holds them must stop.
    pub async fn lost(&self) -> String {
        let mut lost = self.lost.clone();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the lock keeper stopped".to_owned(),
        }
    }

    /// Stops renewing and frees the locks.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if they were no longer held; `Backend` if the backend failed (they then
    /// expire after their TTL).
    pub async fn release(mut self) -> Result<()> {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            let _ = keeper.await;
        }
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (self.release)(lease).await
    }
}

impl std::fmt::Debug for HeldLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLocks")
            .field("lease", &self.lease())
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

/// Renews `lease` every quarter of the TTL until a renewal is refused or the lease comes within
/// the stop margin of its possible expiry, then says why on `lost`.
async fn keep<B: Lock + ?Sized>(
    backend: Arc<B>,
    settings: LockSettings,
    lease: Arc<Mutex<LockLease>>,
    lost: watch::Sender<Option<String>>,
) {
    let every = settings.ttl / 4;
    // The backend's expiry is at least a TTL after the start of the call that set it.
    let mut valid_from = Instant::now();
    let mut next = valid_from + every;
    loop {
        let must_stop = valid_from + settings.ttl - settings.stop_margin;
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = tokio::time::sleep_until(must_stop) => {
                lost.send_replace(Some(format!(
                    "could not renew the locks for {:?}; stopping before they expire",
                    settings.ttl - settings.stop_margin
                )));
                return;
            }
        }
        let current = lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let started = Instant::now();
        match backend.renew_lock(&current, settings.ttl).await {
            Ok(renewed) => {
                *lease
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = renewed;
                valid_from = started;
                next = started + every;
            }
            Err(error) if error.is_lease_lost() => {
                lost.send_replace(Some(format!("the locks were lost: {error}")));
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "could not renew held locks; trying again");
                next = Instant::now() + (every / 4).max(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use baton_core::{FencingToken, Lease, LockName, Owner, Timestamp};

    use super::*;

    fn holder(name: &str, token: u64, reason: &str) -> LockHolder {
        LockHolder {
            name: LockName::new(name).unwrap_or_else(|e| panic!("{e}")),
            lease: Lease::granted(
                Owner::new("ops-1").unwrap_or_else(|e| panic!("{e}")),
                FencingToken::new(token),
                Timestamp::from_millis(0),
            ),
            reason: reason.to_owned(),
            since: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn a_grant_over_several_names_is_described_once_and_two_grants_with_one_token_twice() {
        let holders = [
            holder("app:1", 1, "migration"),
            holder("app:2", 1, "migration"),
            holder("app:3", 1, "backup of app 3"),
            holder("app:4", 1, "backup of app 4"),
        ];
        assert_eq!(
            describe(&holders),
            ["migration", "backup of app 3", "backup of app 4"]
        );
    }
}
