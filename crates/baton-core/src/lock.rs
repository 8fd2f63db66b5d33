//! The [`Lock`] trait: named leases, taken all or nothing.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, Lease, LockName, Owner, Result, Timestamp};

/// The longest reason a holder may give, in bytes.
pub const MAX_REASON_LEN: usize = 1000;
/// The most names one request may lock at once.
pub const MAX_LOCK_NAMES: usize = 64;

/// A request for a set of locks, built with [`LockRequest::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRequest {
    names: Vec<LockName>,
    owner: Owner,
    ttl: Duration,
    reason: String,
    wait: Duration,
}

impl LockRequest {
    /// A request by `owner` for every lock in `names`, held for `ttl`, not waiting.
    ///
    /// Names are sorted and deduplicated, so two requests over overlapping sets always take
    /// them in the same order.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for no names, more than [`MAX_LOCK_NAMES`], or a TTL out of bounds.
    pub fn new(
        names: impl IntoIterator<Item = LockName>,
        owner: Owner,
        ttl: Duration,
    ) -> Result<Self> {
        let mut names: Vec<LockName> = names.into_iter().collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(Error::invalid("a lock request needs at least one name"));
        }
        if names.len() > MAX_LOCK_NAMES {
            return Err(Error::invalid(format!(
                "a lock request may name at most {MAX_LOCK_NAMES} locks, not {}",
                names.len()
            )));
        }
        crate::validate_ttl(ttl)?;
        Ok(Self {
            names,
            owner,
            ttl,
            reason: String::new(),
            wait: Duration::ZERO,
        })
    }

    /// Sets the reason shown to whoever waits for these locks, such as "backup of app 42".
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a reason longer than [`MAX_REASON_LEN`] or holding control characters
    /// other than newlines and tabs.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Result<Self> {
        let reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::invalid(format!(
                "lock reason is {} bytes, more than the {MAX_REASON_LEN} allowed",
                reason.len()
            )));
        }
        if reason
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Error::invalid("lock reason contains control characters"));
        }
        self.reason = reason;
        Ok(self)
    }

    /// Waits up to `wait` for the locks to become free before giving up.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The names requested, sorted and without duplicates.
    pub fn names(&self) -> &[LockName] {
        &self.names
    }

    /// Who asks.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// How long the locks are held once granted, unless renewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Why the owner wants them.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// How long to wait for them.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// A held set of locks: present it to renew or release them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockLease {
    /// The names held, sorted.
    pub names: Vec<LockName>,
    /// The grant. Its token is greater than every earlier token of each name in the set.
    pub lease: Lease,
    /// The reason given.
    pub reason: String,
}

impl LockLease {
    /// The [`Error::LeaseLost`] for this grant, once it is no longer current.
    pub fn lost(&self) -> Error {
        let names: Vec<&str> = self.names.iter().map(LockName::as_str).collect();
        Error::lease_lost(format!("lock {}", names.join(", ")))
    }
}

/// Who holds a lock, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The lock.
    pub name: LockName,
    /// The holder's grant.
    pub lease: Lease,
    /// The holder's reason.
    pub reason: String,
    /// When it was granted.
    pub since: Timestamp,
}

/// The outcome of [`Lock::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Every requested lock is now held.
    Granted(LockLease),
    /// Some requested lock stayed held by others for the whole wait; nothing was taken.
    Busy(Vec<LockHolder>),
}

impl Acquire {
    /// The lease, if granted.
    pub fn granted(self) -> Option<LockLease> {
        match self {
            Self::Granted(lease) => Some(lease),
            Self::Busy(_) => None,
        }
    }
}

/// Named, expiring, exclusive locks.
///
/// To ensure correctness, an implementation must:
/// - grant a request's whole set at once or none of it, never holding part of a set while
///   waiting for the rest (so overlapping requests cannot deadlock);
/// - never let two owners hold the same name at any instant the backend can observe;
/// - grant one fencing token per grant, greater than every earlier token of every name in it;
/// - judge expiry by the backend's clock; an expired lock is free, and its lease fails `renew`
///   and `release` with [`LeaseLost`](crate::Error::LeaseLost);
/// - judge whether a lease is current by its names, owner and token against the backend's
///   record, never by the expiry written in the caller's copy;
/// - treat a second request by the same owner for a name it holds as a conflict like any other:
///   locks are not re-entrant.
#[async_trait]
pub trait Lock: Send + Sync {
    /// Takes every lock of `request`, waiting up to its `wait` for them to be free.
    ///
    /// The wait is measured on the caller's clock (it is how long the caller is willing to
    /// block); whether a holder has expired is judged on the backend's. A waiting implementation
    /// looks again when a lock is released and often enough to notice a holder's expiry.
    ///
    /// # Errors
    ///
    /// `Backend` if the backend failed. Busy locks are not an error: see [`Acquire::Busy`],
    /// which names the holders and their reasons.
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire>;

    /// Extends held locks to `ttl` from now, keeping their token: all of them, or none if any
    /// is no longer held.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if any of them expired or was released; `InvalidInput` for a bad TTL.
    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease>;

    /// Frees held locks.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if any of them expired, was already released or is held by a newer grant;
    /// the names this grant still holds are freed all the same.
    async fn release_lock(&self, lease: &LockLease) -> Result<()>;

    /// Every lock currently held (not expired), ordered by name.
    async fn holders(&self) -> Result<Vec<LockHolder>>;
}
