//! [`Claim`] in memory: each pool's items in a sorted map, unclaimed ones also in a queue
//! ordered by when they became unclaimed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Claim, ClaimLease, FencingToken, ItemId, ItemStatus, Lease, Owner, PoolName, Result, Timestamp,
    validate_items, validate_ttl,
};

use crate::heartbeat::Heartbeats;
use crate::{MemoryBackend, lock};

/// Every pool by name.
#[derive(Default)]
pub(crate) struct Pools {
    pools: HashMap<PoolName, Pool>,
}

#[derive(Default)]
struct Pool {
    items: BTreeMap<ItemId, ItemState>,
    /// Unclaimed items by the order in which they became unclaimed.
    unclaimed: BTreeMap<u64, ItemId>,
    next_seq: u64,
    /// The last token granted per item, kept after removal so a re-added item's tokens still
    /// increase.
    last_token: HashMap<ItemId, u64>,
}

enum ItemState {
    Unclaimed { seq: u64 },
    Claimed(Lease),
}

impl Pool {
    fn make_unclaimed(&mut self, item: &ItemId) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unclaimed.insert(seq, item.clone());
        self.items
            .insert(item.clone(), ItemState::Unclaimed { seq });
    }

    fn grant(&mut self, item: ItemId, owner: &Owner, ttl: Duration, now: Timestamp) -> Lease {
        let token = self.last_token.entry(item.clone()).or_insert(0);
        *token += 1;
        let lease = Lease::granted(
            owner.clone(),
            FencingToken::new(*token),
            now.saturating_add(ttl),
        );
        self.items.insert(item, ItemState::Claimed(lease.clone()));
        lease
    }

    fn expired_claim(&self, now: Timestamp) -> Option<ItemId> {
        self.items
            .iter()
            .filter_map(|(item, state)| match state {
                ItemState::Claimed(lease) if lease.expires_at() <= now => {
                    Some((lease.expires_at(), item))
                }
                _ => None,
            })
            .min()
            .map(|(_, item)| item.clone())
    }

    fn is_current(&self, claim: &ClaimLease, now: Timestamp) -> bool {
        matches!(
            self.items.get(&claim.item),
            Some(ItemState::Claimed(lease))
                if lease.token() == claim.lease.token()
                    && lease.owner() == claim.lease.owner()
                    && lease.expires_at() > now
        )
    }

    fn claimed_by(&self, owner_matches: impl Fn(&Lease) -> bool) -> Vec<ItemId> {
        self.items
            .iter()
            .filter_map(|(item, state)| match state {
                ItemState::Claimed(lease) if owner_matches(lease) => Some(item.clone()),
                _ => None,
            })
            .collect()
    }
}

fn is_dead(lease: &Lease, heartbeats: &Heartbeats, now: Timestamp) -> bool {
    lease.expires_at() <= now || heartbeats.is_dead(lease.owner(), now)
}

#[async_trait]
impl Claim for MemoryBackend {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        let mut pools = lock(&self.inner.pools);
        let pool = pools.pools.entry(pool.clone()).or_default();
        let mut added = 0;
        for item in items {
            if !pool.items.contains_key(item) {
                pool.make_unclaimed(item);
                added += 1;
            }
        }
        Ok(added)
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        let mut pools = lock(&self.inner.pools);
        let Some(pool) = pools.pools.get_mut(pool) else {
            return Ok(0);
        };
        let mut removed = 0;
        for item in items {
            match pool.items.remove(item) {
                Some(ItemState::Unclaimed { seq }) => {
                    pool.unclaimed.remove(&seq);
                    removed += 1;
                }
                Some(ItemState::Claimed(_)) => removed += 1,
                None => {}
            }
        }
        Ok(removed)
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        let pools = lock(&self.inner.pools);
        let Some(pool) = pools.pools.get(pool) else {
            return Ok(Vec::new());
        };
        Ok(pool
            .items
            .iter()
            .map(|(item, state)| ItemStatus {
                item: item.clone(),
                holder: match state {
                    ItemState::Unclaimed { .. } => None,
                    ItemState::Claimed(lease) => Some(lease.clone()),
                },
            })
            .collect())
    }

    async fn claim(
        &self,
        pool_name: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        validate_ttl(ttl)?;
        let now = self.now();
        let mut pools = lock(&self.inner.pools);
        let Some(pool) = pools.pools.get_mut(pool_name) else {
            return Ok(None);
        };
        let item = match pool.unclaimed.pop_first() {
            Some((_, item)) => item,
            None => match pool.expired_claim(now) {
                Some(item) => item,
                None => return Ok(None),
            },
        };
        let lease = pool.grant(item.clone(), owner, ttl, now);
        Ok(Some(ClaimLease {
            pool: pool_name.clone(),
            item,
            lease,
        }))
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        validate_ttl(ttl)?;
        let now = self.now();
        let mut pools = lock(&self.inner.pools);
        let pool = pools
            .pools
            .get_mut(&claim.pool)
            .filter(|pool| pool.is_current(claim, now))
            .ok_or_else(|| claim.lost())?;
        let lease = Lease::granted(
            claim.lease.owner().clone(),
            claim.lease.token(),
            now.saturating_add(ttl),
        );
        pool.items
            .insert(claim.item.clone(), ItemState::Claimed(lease.clone()));
        Ok(ClaimLease {
            lease,
            ..claim.clone()
        })
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        let now = self.now();
        let mut pools = lock(&self.inner.pools);
        let pool = pools
            .pools
            .get_mut(&claim.pool)
            .filter(|pool| pool.is_current(claim, now))
            .ok_or_else(|| claim.lost())?;
        pool.make_unclaimed(&claim.item);
        Ok(())
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        let mut pools = lock(&self.inner.pools);
        let Some(pool) = pools.pools.get_mut(pool) else {
            return Ok(0);
        };
        let items = pool.claimed_by(|lease| lease.owner() == owner);
        for item in &items {
            pool.make_unclaimed(item);
        }
        Ok(items.len() as u64)
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        let now = self.now();
        let mut pools = lock(&self.inner.pools);
        let Some(pool) = pools.pools.get_mut(pool) else {
            return Ok(Vec::new());
        };
        let heartbeats = lock(&self.inner.heartbeats);
        let items = pool.claimed_by(|lease| is_dead(lease, &heartbeats, now));
        drop(heartbeats);
        for item in &items {
            pool.make_unclaimed(item);
        }
        Ok(items)
    }
}
