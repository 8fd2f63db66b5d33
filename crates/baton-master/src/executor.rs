//! [`MasterExecutor`]: the leadership loop that makes one instance master and keeps it so only
//! while its lease is certainly current.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Acquire, FencingToken, Heartbeat, Lock, LockLease, LockRequest, Owner};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::control::{Disabled, MasterControl};
use crate::job::{Deadline, Leadership, MasterJob, StopCause, boot_time};
use crate::options::{MasterName, MasterOptions, MasterSettings, SettingsError, default_owner};

/// Where an executor stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterState {
    /// Waiting out `initDelay`.
    Starting,
    /// Competing for leadership: another instance leads, or nobody yet.
    Waiting,
    /// This instance is master, with this token.
    Leading {
        /// The leadership's fencing token.
        token: FencingToken,
    },
    /// The master is disabled; this instance waits for it to be enabled.
    Disabled {
        /// The reason given when it was disabled.
        reason: String,
    },
    /// The executor has shut down.
    Stopped,
}

/// What an executor reports as it goes, for logs, tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterEvent {
    /// This instance became master; `start` is being called.
    Elected {
        /// The leadership's fencing token.
        token: FencingToken,
    },
    /// This instance stopped being master; `stop` has returned.
    Stopped {
        /// The token of the leadership that ended.
        token: FencingToken,
        /// Why it ended.
        cause: StopCause,
    },
    /// The backend refused this instance's token when it released its lost leadership:
    /// another instance holds the lease, or it had expired.
    TokenRejected {
        /// The refused token.
        token: FencingToken,
    },
    /// The master was seen disabled.
    Disabled(Disabled),
    /// The master was seen enabled again after being disabled.
    Enabled,
}

/// Runs a [`MasterJob`] on exactly one of the instances that run an executor with the same
/// lock name, and on another as soon as that one stops leading.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use baton_master::{MasterExecutor, MasterName, MasterOptions, MasterSettings, job_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let backend = Arc::new(baton_memory::MemoryBackend::new());
/// let settings = MasterSettings { init_delay: Duration::ZERO, ..MasterSettings::default() };
/// let options = MasterOptions::new(MasterName::new("JOB-SCHEDULER")?).with_settings(settings);
/// let (started, mut elected) = tokio::sync::mpsc::unbounded_channel();
/// let job = job_fn(
///     move |leadership| {
///         let started = started.clone();
///         async move { let _ = started.send(leadership.token()); }
///     },
///     |_token, _cause| async {},
/// );
/// let executor = MasterExecutor::start(backend, options, job)?;
/// let token = elected.recv().await;
/// assert!(token.is_some());
/// executor.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct MasterExecutor {
    lock_name: MasterName,
    owner: Owner,
    shutdown: watch::Sender<bool>,
    state: watch::Receiver<MasterState>,
    events: broadcast::Sender<MasterEvent>,
    first_events: Mutex<Option<broadcast::Receiver<MasterEvent>>>,
    task: Option<JoinHandle<()>>,
}

/// How many events a slow reader may fall behind by before it misses some.
const EVENT_CAPACITY: usize = 256;

impl MasterExecutor {
    /// Validates `options` and starts competing for leadership in the background, on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] for timings that cannot work.
    pub fn start<B, J>(
        backend: Arc<B>,
        options: MasterOptions,
        job: J,
    ) -> Result<Self, SettingsError>
    where
        B: Lock + Heartbeat + ?Sized + 'static,
        J: MasterJob,
    {
        options.settings.validate()?;
        let owner = options.owner.clone().unwrap_or_else(default_owner);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (state_tx, state) = watch::channel(MasterState::Starting);
        let (events, first) = broadcast::channel(EVENT_CAPACITY);
        let runner = Runner {
            control: MasterControl::new(backend.clone()),
            backend,
            job: Arc::new(job),
            name: options.lock_name.clone(),
            owner: owner.clone(),
            settings: options.settings,
            shutdown: shutdown_rx,
            state: state_tx,
            events: events.clone(),
            disabled_seen: false,
            refreshed_at: None,
        };
        let task = tokio::spawn(runner.run());
        Ok(Self {
            lock_name: options.lock_name,
            owner,
            shutdown,
            state,
            events,
            first_events: Mutex::new(Some(first)),
            task: Some(task),
        })
    }

    /// The master this executor competes for.
    pub fn lock_name(&self) -> &MasterName {
        &self.lock_name
    }

    /// This instance's owner name, as [`MasterControl::status`] shows holders.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Where the executor stands now.
    pub fn state(&self) -> MasterState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<MasterState> {
        self.state.clone()
    }

    /// A stream of events. The first call gets every event since [`start`](Self::start); later
    /// calls get events from then on.
    pub fn events(&self) -> broadcast::Receiver<MasterEvent> {
        self.first_events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// Stops competing: if this instance leads, `stop` is called and the lease released at
    /// once, so another instance takes over without waiting for it to expire.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!(master = %self.lock_name, %error, "master executor task failed");
        }
    }
}

impl Drop for MasterExecutor {
    /// Shuts the executor down in the background, as [`shutdown`](Self::shutdown) without
    /// waiting.
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// How often an instance looks at the disabled marker, and retries after a backend error:
/// a tenth of the lease, between 10 ms and 1 s.
pub fn poll_interval(settings: &MasterSettings) -> Duration {
    (settings.effective_lease() / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// How often a seen disabled marker is pushed to the longest lease again.
const REFRESH_DISABLED_EVERY: Duration = Duration::from_secs(60 * 60);

/// What ended the time as master: carry on competing, or shut down.
enum Next {
    Compete,
    Shutdown,
}

struct Runner<B: ?Sized, J> {
    backend: Arc<B>,
    control: MasterControl<B>,
    job: Arc<J>,
    name: MasterName,
    owner: Owner,
    settings: MasterSettings,
    shutdown: watch::Receiver<bool>,
    state: watch::Sender<MasterState>,
    events: broadcast::Sender<MasterEvent>,
    disabled_seen: bool,
    refreshed_at: Option<Instant>,
}

impl<B, J> Runner<B, J>
where
    B: Lock + Heartbeat + ?Sized + 'static,
    J: MasterJob,
{
    async fn run(mut self) {
        let poll = poll_interval(&self.settings);
        if self.pause(self.settings.init_delay).await {
            loop {
                match self.control.disabled(&self.name).await {
                    Err(error) => {
                        tracing::warn!(master = %self.name, %error, "cannot read the disabled state");
                        if !self.pause(poll).await {
                            break;
                        }
                        continue;
                    }
                    Ok(Some(disabled)) => {
                        self.seen_disabled(disabled).await;
                        if !self.pause(poll).await {
                            break;
                        }
                        continue;
                    }
                    Ok(None) => self.seen_enabled(),
                }
                self.set_state(MasterState::Waiting);
                match self.compete().await {
                    Competed::Granted(lease) => {
                        if let Next::Shutdown = self.lead(lease).await {
                            break;
                        }
                    }
                    // Still held by another instance after a whole window: look at the
                    // disabled state again and keep watching.
                    Competed::Busy => {}
                    Competed::Failed(error) => {
                        tracing::warn!(master = %self.name, %error, "cannot compete for leadership");
                        if !self.pause(poll).await {
                            break;
                        }
                    }
                    Competed::Shutdown => break,
                }
                if self.stopping() {
                    break;
                }
            }
        }
        self.finish().await;
    }

    /// Waits for the lease, watching it through the backend for up to `checkMasterInterval`
    /// (or the disabled-check interval, if shorter): the backend's wait looks again when a
    /// lease is released and often enough to see one expire.
    async fn compete(&mut self) -> Competed {
        let lease = self.settings.effective_lease();
        // Short windows, so that a disable is noticed while waiting; within a window the
        // backend watches the lease.
        let window = self
            .settings
            .check_master_interval
            .min(poll_interval(&self.settings));
        self.beat(window.saturating_add(lease)).await;
        let request = match LockRequest::new([self.name.leader_lock()], self.owner.clone(), lease)
            .and_then(|request| request.with_reason(format!("master {}", self.name)))
        {
            Ok(request) => request.with_wait(window),
            Err(error) => return Competed::Failed(error),
        };
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => Competed::Shutdown,
            outcome = self.backend.acquire(&request) => match outcome {
                Ok(Acquire::Granted(lease)) => Competed::Granted(lease),
                Ok(Acquire::Busy(_)) => Competed::Busy,
                Err(error) => Competed::Failed(error),
            },
        }
    }

    /// Acts as master from a fresh grant until leadership is lost, then calls `stop`.
    async fn lead(&mut self, granted: LockLease) -> Next {
        let ttl = self.settings.effective_lease();
        let safe = self.settings.safe_lease();
        // The grant came at some instant during the wait; renew at once so that the local
        // deadline is measured from an instant known to precede the backend's expiry.
        let sent = Instant::now();
        let boot_sent = boot_time();
        let mut lease = match tokio::time::timeout(safe, self.backend.renew_lock(&granted, ttl))
            .await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(error)) => {
                tracing::warn!(master = %self.name, %error, "lost the lease just granted");
                self.release(&granted).await;
                return Next::Compete;
            }
            Err(_) => {
                tracing::warn!(master = %self.name, "renewing the lease just granted timed out");
                self.release(&granted).await;
                return Next::Compete;
            }
        };
        let mut deadline = sent + safe;
        let mut boot_deadline = Deadline::after(sent, boot_sent, safe);
        // A disable written before the grant must win: look once more before starting.
        match self.control.disabled(&self.name).await {
            Ok(None) => {}
            Ok(Some(disabled)) => {
                self.release(&lease).await;
                self.seen_disabled(disabled).await;
                return Next::Compete;
            }
            Err(error) => {
                tracing::warn!(master = %self.name, %error, "cannot read the disabled state");
                self.release(&lease).await;
                return Next::Compete;
            }
        }
        let token = lease.lease.token();
        let leadership =
            Leadership::new(self.name.clone(), self.owner.clone(), token, boot_deadline);
        tracing::info!(master = %self.name, owner = %self.owner, %token, "became master");
        self.state.send_replace(MasterState::Leading { token });
        let _ = self.events.send(MasterEvent::Elected { token });
        let job = self.job.clone();
        let started = leadership.clone();
        let start = tokio::spawn(async move { job.start(started).await });

        let heartbeat = self.settings.heartbeat_interval;
        let retries = self.settings.max_heartbeat_retry_count;
        let poll = poll_interval(&self.settings);
        let mut failures = 0_u32;
        let mut next_renew = sent + heartbeat;
        let mut next_check = Instant::now() + poll;
        let mut shutdown = self.shutdown.clone();
        let cause = loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => break StopCause::Expired,
                () = stopped(&mut shutdown) => break StopCause::Shutdown,
                () = tokio::time::sleep_until(next_renew) => {
                    if boot_deadline.passed() {
                        break StopCause::Expired;
                    }
                    let sent = Instant::now();
                    let boot_sent = boot_time();
                    match tokio::time::timeout_at(deadline, self.backend.renew_lock(&lease, ttl)).await {
                        Err(_) => break StopCause::Expired,
                        Ok(Ok(renewed)) => {
                            lease = renewed;
                            deadline = sent + safe;
                            boot_deadline = Deadline::after(sent, boot_sent, safe);
                            leadership.extend(boot_deadline);
                            failures = 0;
                            next_renew = sent + heartbeat;
                            self.beat(ttl).await;
                        }
                        Ok(Err(error)) if error.is_lease_lost() => break StopCause::LeaseLost,
                        Ok(Err(error)) => {
                            failures += 1;
                            tracing::warn!(master = %self.name, %error, failures, "renewing the master lease failed");
                            if failures > retries {
                                break StopCause::RenewFailed { error: error.to_string() };
                            }
                            // Spread the retries left over the time left.
                            let now = Instant::now();
                            let left = deadline.saturating_duration_since(now);
                            let spread = left / (retries - failures + 2);
                            next_renew = now + heartbeat.min(spread);
                        }
                    }
                }
                () = tokio::time::sleep_until(next_check) => {
                    let check = tokio::time::timeout_at(deadline, self.control.disabled(&self.name)).await;
                    if let Ok(Ok(Some(disabled))) = check {
                        let reason = disabled.reason.clone();
                        self.seen_disabled(disabled).await;
                        break StopCause::Disabled { reason };
                    }
                    next_check = Instant::now() + poll;
                }
            }
        };

        leadership.revoke();
        tracing::info!(master = %self.name, %token, %cause, "stopping master");
        // In a task of its own, so that a panicking `stop` cannot take the executor down with
        // its lease still held.
        let job = self.job.clone();
        let stop_cause = cause.clone();
        if let Err(error) = tokio::spawn(async move { job.stop(token, stop_cause).await }).await {
            tracing::error!(master = %self.name, %error, "the master job's stop failed");
        }
        if !start.is_finished() {
            start.abort();
        }
        let _ = start.await;
        if cause != StopCause::LeaseLost {
            self.release(&lease).await;
        }
        let _ = self.events.send(MasterEvent::Stopped {
            token,
            cause: cause.clone(),
        });
        match cause {
            StopCause::Shutdown => Next::Shutdown,
            StopCause::Disabled { .. } => Next::Compete,
            _ => {
                self.set_state(MasterState::Waiting);
                Next::Compete
            }
        }
    }

    /// Gives the lease back so that another instance can take over at once; reports a token
    /// the backend refuses.
    async fn release(&self, lease: &LockLease) {
        let limit = poll_interval(&self.settings).max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.backend.release_lock(lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) if error.is_lease_lost() => {
                let token = lease.lease.token();
                tracing::info!(master = %self.name, %token, "the backend refused the old token");
                let _ = self.events.send(MasterEvent::TokenRejected { token });
            }
            Ok(Err(error)) => {
                tracing::warn!(master = %self.name, %error, "cannot release the master lease");
            }
            Err(_) => tracing::warn!(master = %self.name, "releasing the master lease timed out"),
        }
    }

    async fn seen_disabled(&mut self, disabled: Disabled) {
        self.set_state(MasterState::Disabled {
            reason: disabled.reason.clone(),
        });
        if !self.disabled_seen {
            self.disabled_seen = true;
            tracing::info!(master = %self.name, reason = %disabled.reason, "master is disabled");
            let _ = self.events.send(MasterEvent::Disabled(disabled));
        }
        let due = self
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= REFRESH_DISABLED_EVERY);
        if due {
            self.refreshed_at = Some(Instant::now());
            if let Err(error) = self.control.refresh_disabled(&self.name).await {
                tracing::warn!(master = %self.name, %error, "cannot refresh the disabled state");
            }
        }
    }

    /// Moves to `state`, telling watchers only if it changed.
    fn set_state(&self, state: MasterState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn seen_enabled(&mut self) {
        if self.disabled_seen {
            self.disabled_seen = false;
            self.refreshed_at = None;
            tracing::info!(master = %self.name, "master is enabled");
            let _ = self.events.send(MasterEvent::Enabled);
        }
    }

    /// Records this instance as alive for `ttl`; a failure only costs the status listing.
    async fn beat(&self, ttl: Duration) {
        let limit = poll_interval(&self.settings);
        if let Ok(Err(error)) =
            tokio::time::timeout(limit, self.backend.beat(&self.owner, ttl)).await
        {
            tracing::debug!(owner = %self.owner, %error, "heartbeat failed");
        }
    }

    /// Waits `duration`; false if shutdown came first.
    async fn pause(&mut self, duration: Duration) -> bool {
        tokio::select! {
            biased;
            () = stopped(&mut self.shutdown) => false,
            () = tokio::time::sleep(duration) => true,
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Leaves nothing behind: a lease granted while the wait was cut short by shutdown is
    /// released, and the heartbeat forgotten.
    async fn finish(&mut self) {
        let leader = self.name.leader_lock();
        if let Ok(holders) = self.backend.holders().await {
            for holder in holders {
                if holder.name == leader && holder.lease.owner() == &self.owner {
                    let lease = LockLease {
                        names: vec![holder.name],
                        lease: holder.lease,
                        reason: holder.reason,
                    };
                    let _ = self.backend.release_lock(&lease).await;
                }
            }
        }
        let _ = self.backend.forget(&self.owner).await;
        self.state.send_replace(MasterState::Stopped);
    }
}

/// The outcome of one watch for the lease.
enum Competed {
    Granted(LockLease),
    Busy,
    Failed(baton_core::Error),
    Shutdown,
}

/// Resolves once shutdown is asked for (or the executor handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
