//! Disabling, enabling and listing masters, through the backend alone, so that every instance
//! and every restart sees the same state.
//!
//! A master `X` is two locks in the backend's lock namespace:
//! - `master:X`, held by the current master with a short lease that it renews;
//! - `master-disabled:X`, held while the master is disabled, by whoever disabled it, with the
//!   longest lease a backend grants and the reason as the lock's reason. Instances check it
//!   before they compete, after they win and while they lead, and renew it while they see it.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_core::{
    Acquire, Error, FencingToken, Heartbeat, Lock, LockHolder, LockLease, LockRequest, MAX_TTL,
    Owner, Result, Timestamp,
};
use serde::Serialize;

use crate::MasterName;

/// The prefix of the lock whose holder is the master.
pub const LEADER_PREFIX: &str = "master:";
/// The prefix of the lock held while a master is disabled.
pub const DISABLED_PREFIX: &str = "master-disabled:";

/// Why and since when a master is disabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disabled {
    /// The reason given when it was disabled.
    pub reason: String,
    /// Who disabled it.
    pub by: Owner,
    /// When, by the backend's clock.
    pub since: Timestamp,
}

impl Disabled {
    fn from_holder(holder: &LockHolder) -> Self {
        Self {
            reason: holder.reason.clone(),
            by: holder.lease.owner().clone(),
            since: holder.since,
        }
    }
}

/// The current master of a lock name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The instance that leads.
    pub owner: Owner,
    /// Since when it has led, by the backend's clock.
    pub since: Timestamp,
    /// The fencing token of its leadership.
    pub token: FencingToken,
    /// When its lease runs out unless renewed, by the backend's clock.
    pub expires_at: Timestamp,
    /// Whether its process heartbeat is current; `None` if it could not be read.
    pub alive: Option<bool>,
}

/// One master as [`MasterControl::status`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MasterStatus {
    /// The master's name.
    pub lock_name: MasterName,
    /// Who leads now, if anyone.
    pub holder: Option<Holder>,
    /// Why it is disabled, if it is.
    pub disabled: Option<Disabled>,
}

/// What [`MasterControl::disable`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DisableOutcome {
    /// The master is now disabled; its current holder stops within one check.
    Disabled(Disabled),
    /// It was disabled already; the earlier reason stands.
    AlreadyDisabled(Disabled),
}

/// Disables, enables and lists masters on any backend with [`Lock`] and [`Heartbeat`].
pub struct MasterControl<B: ?Sized> {
    backend: Arc<B>,
}

impl<B: ?Sized> Clone for MasterControl<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
        }
    }
}

impl<B: Lock + Heartbeat + ?Sized> MasterControl<B> {
    /// Controls the masters of `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }

    /// Disables `name`: its master calls `stop` at its next check, and no instance becomes
    /// master until [`enable`](Self::enable). The state lives in the backend, so it holds
    /// across instances and restarts.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a reason longer than [`baton_core::MAX_REASON_LEN`] or holding
    /// control characters; `Backend` if the backend failed.
    pub async fn disable(
        &self,
        name: &MasterName,
        reason: &str,
        by: &Owner,
    ) -> Result<DisableOutcome> {
        let request = LockRequest::new([name.disabled_lock()], by.clone(), MAX_TTL)?
            .with_reason(reason)?
            .with_wait(std::time::Duration::from_secs(2));
        match self.backend.acquire(&request).await? {
            Acquire::Granted(_) => {
                let state = self.disabled(name).await?.unwrap_or(Disabled {
                    reason: reason.to_owned(),
                    by: by.clone(),
                    since: Timestamp::EPOCH,
                });
                tracing::info!(master = %name, reason, by = %by, "master disabled");
                Ok(DisableOutcome::Disabled(state))
            }
            Acquire::Busy(holders) => match holders.first() {
                Some(holder) => Ok(DisableOutcome::AlreadyDisabled(Disabled::from_holder(
                    holder,
                ))),
                None => Err(Error::conflict(format!("master {name} is being disabled"))),
            },
        }
    }

    /// Enables `name` again; one of the waiting instances becomes master. Returns whether it
    /// was disabled.
    ///
    /// # Errors
    ///
    /// `Backend` if the backend failed.
    pub async fn enable(&self, name: &MasterName) -> Result<bool> {
        let lock = name.disabled_lock();
        let mut was_disabled = false;
        // A disable racing with this enable may replace the marker between the read and the
        // release; look again until none is left.
        for _ in 0..5 {
            let Some(holder) = self.holder_of(&lock).await? else {
                if was_disabled {
                    tracing::info!(master = %name, "master enabled");
                }
                return Ok(was_disabled);
            };
            was_disabled = true;
            match self.backend.release_lock(&lease_of(holder)).await {
                Ok(()) => {}
                Err(error) if error.is_lease_lost() => {}
                Err(error) => return Err(error),
            }
        }
        Err(Error::conflict(format!(
            "master {name} is being disabled again while it is enabled"
        )))
    }

    /// Whether `name` is disabled, and why.
    ///
    /// # Errors
    ///
    /// `Backend` if the backend failed.
    pub async fn disabled(&self, name: &MasterName) -> Result<Option<Disabled>> {
        Ok(self
            .holder_of(&name.disabled_lock())
            .await?
            .map(|holder| Disabled::from_holder(&holder)))
    }

    /// Every master that leads or is disabled now, plus every name in `known` (which may be
    /// neither), ordered by name.
    ///
    /// # Errors
    ///
    /// `Backend` if the backend failed.
    pub async fn status(&self, known: &[MasterName]) -> Result<Vec<MasterStatus>> {
        let mut masters: BTreeMap<MasterName, MasterStatus> = known
            .iter()
            .map(|name| {
                let status = MasterStatus {
                    lock_name: name.clone(),
                    holder: None,
                    disabled: None,
                };
                (name.clone(), status)
            })
            .collect();
        for holder in self.backend.holders().await? {
            let lock = holder.name.as_str();
            let (name, leader) = if let Some(name) = lock.strip_prefix(LEADER_PREFIX) {
                (name, true)
            } else if let Some(name) = lock.strip_prefix(DISABLED_PREFIX) {
                (name, false)
            } else {
                continue;
            };
            let Ok(name) = MasterName::new(name) else {
                continue;
            };
            let entry = masters.entry(name.clone()).or_insert(MasterStatus {
                lock_name: name,
                holder: None,
                disabled: None,
            });
            if leader {
                let alive = self.backend.alive(holder.lease.owner()).await.ok();
                entry.holder = Some(Holder {
                    owner: holder.lease.owner().clone(),
                    since: holder.since,
                    token: holder.lease.token(),
                    expires_at: holder.lease.expires_at(),
                    alive,
                });
            } else {
                entry.disabled = Some(Disabled::from_holder(&holder));
            }
        }
        Ok(masters.into_values().collect())
    }

    /// Pushes the disabled marker of `name` to the longest lease again, so that a disable
    /// outlives the backend's longest lease for as long as some instance is running.
    pub(crate) async fn refresh_disabled(&self, name: &MasterName) -> Result<()> {
        if let Some(holder) = self.holder_of(&name.disabled_lock()).await? {
            match self.backend.renew_lock(&lease_of(holder), MAX_TTL).await {
                Ok(_) => {}
                // Enabled (or replaced) meanwhile: nothing to keep.
                Err(error) if error.is_lease_lost() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn holder_of(&self, lock: &baton_core::LockName) -> Result<Option<LockHolder>> {
        Ok(self
            .backend
            .holders()
            .await?
            .into_iter()
            .find(|holder| &holder.name == lock))
    }
}

/// The lease a holder record stands for, to renew or release a lock taken by another process.
fn lease_of(holder: LockHolder) -> LockLease {
    LockLease {
        names: vec![holder.name],
        lease: holder.lease,
        reason: holder.reason,
    }
}
