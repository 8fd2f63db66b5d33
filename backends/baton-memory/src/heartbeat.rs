//! [`Heartbeat`] in memory: one expiry time per owner.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Beat, Heartbeat, Owner, Result, Timestamp, validate_ttl};

use crate::{MemoryBackend, lock};

/// Each owner's heartbeat expiry, and when its last beat arrived.
#[derive(Default)]
pub(crate) struct Heartbeats {
    expires: HashMap<Owner, Timestamp>,
    beat_at: HashMap<Owner, Timestamp>,
}

impl Heartbeats {
    /// Whether `owner` beat once and its last beat has expired.
    pub(crate) fn is_dead(&self, owner: &Owner, now: Timestamp) -> bool {
        self.expires
            .get(owner)
            .is_some_and(|expires| *expires <= now)
    }
}

#[async_trait]
impl Heartbeat for MemoryBackend {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        let now = self.now();
        let expires = now.saturating_add(ttl);
        let mut heartbeats = lock(&self.inner.heartbeats);
        heartbeats.expires.insert(owner.clone(), expires);
        heartbeats.beat_at.insert(owner.clone(), now);
        Ok(())
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        let now = self.now();
        let heartbeats = lock(&self.inner.heartbeats);
        Ok(heartbeats
            .expires
            .get(owner)
            .is_some_and(|expires| *expires > now))
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let now = self.now();
        let heartbeats = lock(&self.inner.heartbeats);
        let mut dead: Vec<Owner> = heartbeats
            .expires
            .iter()
            .filter(|(_, expires)| **expires <= now)
            .map(|(owner, _)| owner.clone())
            .collect();
        dead.sort();
        Ok(dead)
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let now = self.now();
        let heartbeats = lock(&self.inner.heartbeats);
        let (Some(&expires_at), Some(&at)) =
            (heartbeats.expires.get(owner), heartbeats.beat_at.get(owner))
        else {
            return Ok(None);
        };
        Ok(Some(Beat {
            at: Some(at),
            expires_at,
            alive: expires_at > now,
        }))
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        let mut heartbeats = lock(&self.inner.heartbeats);
        heartbeats.expires.remove(owner);
        heartbeats.beat_at.remove(owner);
        Ok(())
    }
}
