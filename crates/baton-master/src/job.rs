//! What runs on the master: the [`MasterJob`] trait, the [`Leadership`] it is handed, and why it
//! is stopped.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{FencingToken, Owner};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::MasterName;

/// The work a master does: `start` runs once each time this instance becomes master, `stop`
/// once each time it stops being master, whatever the reason.
///
/// `start` may return at once after spawning its work, or run until
/// [`Leadership::lost`] resolves. When leadership ends, the executor marks the leadership
/// lost (so [`Leadership::is_current`] turns false), awaits `stop`, and then aborts `start` if
/// it is still running.
#[async_trait]
pub trait MasterJob: Send + Sync + 'static {
    /// Begins the master's work. Present [`Leadership::token`] to every downstream resource
    /// that can check it, and check [`Leadership::is_current`] before each action.
    async fn start(&self, leadership: Leadership);

    /// Ends the master's work: leadership `token` is over because of `cause`.
    async fn stop(&self, token: FencingToken, cause: StopCause);
}

/// A [`MasterJob`] made of two async closures; see [`job_fn`].
pub struct FnJob<S, T> {
    start: S,
    stop: T,
}

/// A [`MasterJob`] from a `start` and a `stop` closure, as the seed's `{ start, stop }` object.
pub fn job_fn<S, SF, T, TF>(start: S, stop: T) -> FnJob<S, T>
where
    S: Fn(Leadership) -> SF + Send + Sync + 'static,
    SF: Future<Output = ()> + Send + 'static,
    T: Fn(FencingToken, StopCause) -> TF + Send + Sync + 'static,
    TF: Future<Output = ()> + Send + 'static,
{
    FnJob { start, stop }
}

#[async_trait]
impl<S, SF, T, TF> MasterJob for FnJob<S, T>
where
    S: Fn(Leadership) -> SF + Send + Sync + 'static,
    SF: Future<Output = ()> + Send + 'static,
    T: Fn(FencingToken, StopCause) -> TF + Send + Sync + 'static,
    TF: Future<Output = ()> + Send + 'static,
{
    async fn start(&self, leadership: Leadership) {
        (self.start)(leadership).await;
    }

    async fn stop(&self, token: FencingToken, cause: StopCause) {
        (self.stop)(token, cause).await;
    }
}

/// Why a master stopped being master.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopCause {
    /// The master was disabled, with this reason.
    Disabled {
        /// The reason given when it was disabled.
        reason: String,
    },
    /// The backend refused to renew the lease: it had expired there, or another instance
    /// holds it now.
    LeaseLost,
    /// This instance's own clock says the lease may have run out (renewals stalled, or the
    /// process was paused); it stops before the backend can hand leadership on.
    Expired,
    /// Renewing failed more than `maxHeartbeatRetryCount` times in a row.
    RenewFailed {
        /// The last failure.
        error: String,
    },
    /// The executor was shut down; the lease is released at once.
    Shutdown,
}

impl StopCause {
    /// A short word for the cause: `disabled`, `lease-lost`, `expired`, `renew-failed`,
    /// `shutdown`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Disabled { .. } => "disabled",
            Self::LeaseLost => "lease-lost",
            Self::Expired => "expired",
            Self::RenewFailed { .. } => "renew-failed",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled { reason } => write!(f, "disabled: {reason}"),
            Self::RenewFailed { error } => write!(f, "renew failed: {error}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// Proof of being master, handed to [`MasterJob::start`].
///
/// It is current until the executor gives leadership up or this instance's monotonic clock
/// passes the lease's safe end (the lease less a tenth, measured from before the request that
/// granted or last renewed it). The check reads the clock itself, so a process that was paused
/// past its lease sees it is no longer master the moment it runs again, before any timer fires.
/// On Linux it also reads the boot-time clock, which, unlike the monotonic one, keeps counting
/// while the machine is suspended: a master whose host slept through its lease does not act on
/// waking.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<LeadershipInner>,
}

struct LeadershipInner {
    lock_name: MasterName,
    owner: Owner,
    token: FencingToken,
    deadline: Mutex<Deadline>,
    revoked: watch::Sender<bool>,
}

/// The safe end of the lease on this instance's clocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// On the monotonic clock (tokio's, so that tests can pause it).
    pub(crate) instant: Instant,
    /// On the boot-time clock, where there is one.
    pub(crate) boot: Option<Duration>,
}

impl Deadline {
    /// `safe` from `sent` (a monotonic instant) and `boot_sent` (a boot-time reading taken with
    /// it).
    pub(crate) fn after(sent: Instant, boot_sent: Option<Duration>, safe: Duration) -> Self {
        Self {
            instant: sent + safe,
            boot: boot_sent.map(|boot| boot + safe),
        }
    }

    /// Whether the lease may have run out by either clock.
    pub(crate) fn passed(&self) -> bool {
        Instant::now() >= self.instant
            || matches!((self.boot, boot_time()), (Some(end), Some(now)) if now >= end)
    }
}

/// The boot-time clock: time since boot, suspended time included.
#[cfg(target_os = "linux")]
pub(crate) fn boot_time() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .ok()
        .map(Duration::from)
}

/// The boot-time clock: none on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn boot_time() -> Option<Duration> {
    None
}

impl Leadership {
    pub(crate) fn new(
        lock_name: MasterName,
        owner: Owner,
        token: FencingToken,
        deadline: Deadline,
    ) -> Self {
        Self {
            inner: Arc::new(LeadershipInner {
                lock_name,
                owner,
                token,
                deadline: Mutex::new(deadline),
                revoked: watch::channel(false).0,
            }),
        }
    }

    /// The fencing token of this leadership: greater than every earlier leadership's of the
    /// same master. Hand it to downstream resources so they can refuse a deposed master.
    pub fn token(&self) -> FencingToken {
        self.inner.token
    }

    /// The master this leadership is of.
    pub fn lock_name(&self) -> &MasterName {
        &self.inner.lock_name
    }

    /// This instance's owner name.
    pub fn owner(&self) -> &Owner {
        &self.inner.owner
    }

    /// Whether this instance may still act as master: not given up, and its own clock not past
    /// the lease's safe end. Check it before every action.
    pub fn is_current(&self) -> bool {
        !*self.inner.revoked.borrow() && !self.current_deadline().passed()
    }

    /// The instant, on this instance's monotonic clock, after which it must not act unless the
    /// lease is renewed first.
    pub fn deadline(&self) -> Instant {
        self.current_deadline().instant
    }

    fn current_deadline(&self) -> Deadline {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves once this leadership is over: given up, or past its safe end.
    pub async fn lost(&self) {
        let mut revoked = self.inner.revoked.subscribe();
        loop {
            if *revoked.borrow_and_update() {
                return;
            }
            if self.current_deadline().passed() {
                return;
            }
            let deadline = self.deadline();
            tokio::select! {
                changed = revoked.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    pub(crate) fn extend(&self, deadline: Deadline) {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = deadline;
    }

    pub(crate) fn revoke(&self) {
        self.inner.revoked.send_replace(true);
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("lock_name", &self.inner.lock_name)
            .field("owner", &self.inner.owner)
            .field("token", &self.inner.token)
            .field("current", &self.is_current())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn leadership(deadline: Deadline) -> Leadership {
        Leadership::new(
            MasterName::new("m").unwrap(),
            Owner::new("o").unwrap(),
            FencingToken::new(1),
            deadline,
        )
    }

    #[tokio::test]
    async fn leadership_ends_when_revoked_or_when_its_monotonic_deadline_passes() {
        let far = Instant::now() + Duration::from_secs(3600);
        let current = leadership(Deadline {
            instant: far,
            boot: None,
        });
        assert!(current.is_current());
        current.revoke();
        assert!(!current.is_current());
        current.lost().await;

        let past = leadership(Deadline {
            instant: Instant::now(),
            boot: None,
        });
        assert!(!past.is_current());
        past.lost().await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn leadership_ends_when_the_boot_clock_passes_its_deadline_even_if_the_monotonic_one_has_not()
     {
        // What a host suspended past its lease sees on waking: the monotonic clock stood
        // still, the boot-time clock did not.
        let now = boot_time().unwrap();
        let slept = leadership(Deadline {
            instant: Instant::now() + Duration::from_secs(3600),
            boot: Some(now - Duration::from_millis(1)),
        });
        assert!(!slept.is_current());
        let awake = leadership(Deadline {
            instant: Instant::now() + Duration::from_secs(3600),
            boot: Some(now + Duration::from_secs(3600)),
        });
        assert!(awake.is_current());
    }
}
