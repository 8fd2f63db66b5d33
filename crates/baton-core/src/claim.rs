//! The [`Claim`] trait: a pool of long-lived work that owners claim and hand back.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, ItemId, Lease, Owner, PoolName, Result};

/// The most items one [`Claim::add`] or [`Claim::remove`] call may carry.
pub const MAX_ITEMS: usize = 10_000;

/// An owner's hold on one item of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimLease {
    /// The pool the item belongs to.
    pub pool: PoolName,
    /// The item held.
    pub item: ItemId,
    /// The grant: owner, fencing token and expiry.
    pub lease: Lease,
}

impl ClaimLease {
    /// The [`Error::LeaseLost`] for this claim, once it is no longer current.
    pub fn lost(&self) -> Error {
        Error::lease_lost(format!("claim on {} in pool {}", self.item, self.pool))
    }
}

/// Checks that one [`Claim::add`] or [`Claim::remove`] call carries at most [`MAX_ITEMS`] items.
///
/// # Errors
///
/// `InvalidInput` for more.
pub fn validate_items(items: &[ItemId]) -> Result<()> {
    if items.len() > MAX_ITEMS {
        return Err(Error::invalid(format!(
            "one call may carry at most {MAX_ITEMS} items, not {}",
            items.len()
        )));
    }
    Ok(())
}

/// One item of a pool and who holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStatus {
    /// The item.
    pub item: ItemId,
    /// Its current holder, if it is claimed (an expired claim is still listed until reaped or
    /// taken over).
    pub holder: Option<Lease>,
}

/// A pool of items (accounts, shards) shared among owners.
///
/// Every item of a pool is at every moment either unclaimed or claimed by exactly one owner.
///
/// To ensure correctness, an implementation must:
/// - move an item between unclaimed and claimed in one atomic step, so a crash can neither lose
///   nor duplicate it;
/// - grant each claim a fencing token greater than every earlier token for that item, even one
///   removed and added again;
/// - judge expiry by the backend's clock; an expired claim fails `renew` and `release` with
///   [`LeaseLost`](crate::Error::LeaseLost) and may be claimed by another owner;
/// - judge whether a claim is current by its item, owner and token against the backend's
///   record, never by the expiry written in the caller's copy;
/// - hand out unclaimed items oldest first, so that a returned item goes to the back.
#[async_trait]
pub trait Claim: Send + Sync {
    /// Adds the items that are not already in the pool, unclaimed; returns how many were added.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for more than [`MAX_ITEMS`] items in one call; nothing is added.
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64>;

    /// Removes items from the pool, claimed or not; returns how many were removed. A holder of
    /// a removed item loses its lease.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for more than [`MAX_ITEMS`] items in one call; nothing is removed.
    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64>;

    /// Every item of the pool and its holder, ordered by item.
    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>>;

    /// Claims one item for `owner` for `ttl`: the longest-unclaimed item, or else an item whose
    /// claim has expired. `None` when every item is held.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a TTL out of bounds; `Backend` if the backend failed.
    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>>;

    /// Extends a claim to `ttl` from now, keeping its token.
    ///
    /// # Errors
    ///
    /// `LeaseLost` if the claim expired, was released, reaped or removed, or is held by another
    /// grant.
    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease>;

    /// Returns a claimed item to the back of the unclaimed list.
    ///
    /// # Errors
    ///
    /// `LeaseLost` as for [`renew_claim`](Claim::renew_claim).
    async fn release_claim(&self, claim: &ClaimLease) -> Result<()>;

    /// Returns every item `owner` holds in `pool`, expired claims not yet reaped included;
    /// returns how many.
    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64>;

    /// Returns to the pool every item whose claim expired or whose owner's heartbeat
    /// (see [`Heartbeat`](crate::Heartbeat)) expired; returns those items.
    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>>;
}
