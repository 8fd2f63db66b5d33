//! Leases and fencing tokens: the proof of holding a job, a lock, a claim or leadership.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Owner, Result, Timestamp};

/// The shortest TTL a lease may have.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// The longest TTL a lease may have: a lease that long is a configuration mistake.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Checks a lease TTL: at least [`MIN_TTL`], at most [`MAX_TTL`].
///
/// # Errors
///
/// [`Error::InvalidInput`] for a TTL outside those bounds.
pub fn validate_ttl(ttl: Duration) -> Result<()> {
    if ttl < MIN_TTL {
        return Err(Error::invalid("ttl must be at least 1ms"));
    }
    if ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "ttl of {}s is longer than the {}s allowed",
            ttl.as_secs(),
            MAX_TTL.as_secs()
        )));
    }
    Ok(())
}

/// A fencing token: strictly greater than every earlier token granted for the same resource.
///
/// Hand it to a downstream resource so that it can reject writes from a deposed holder.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(u64);

impl FencingToken {
    /// A token with the given value. Backends call this when they grant a lease.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The token's value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FencingToken({})", self.0)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A time-limited grant to one owner, carrying its fencing token.
///
/// A lease is valid while the backend's clock reads earlier than [`Lease::expires_at`]; after
/// that every operation presenting it fails with [`Error::LeaseLost`], even if nobody else has
/// taken the resource yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    owner: Owner,
    token: FencingToken,
    expires_at: Timestamp,
}

impl Lease {
    /// A lease as granted by a backend. Only backends should build leases: user code gets them
    /// from a grant (`reserve`, `acquire`, `claim`).
    pub fn granted(owner: Owner, token: FencingToken, expires_at: Timestamp) -> Self {
        Self {
            owner,
            token,
            expires_at,
        }
    }

    /// Who holds the lease.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The fencing token of this grant.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// When the lease expires, by the backend's clock.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds_are_enforced() {
        assert!(validate_ttl(Duration::ZERO).is_err());
        assert!(validate_ttl(Duration::from_millis(1)).is_ok());
        assert!(validate_ttl(MAX_TTL).is_ok());
        assert!(validate_ttl(MAX_TTL + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn tokens_order_by_value() {
        assert!(FencingToken::new(2) > FencingToken::new(1));
    }
}
