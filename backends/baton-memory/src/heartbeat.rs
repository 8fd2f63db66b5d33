//! [`Heartbeat`] in memory: each owner's last beat time and expiry.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Beat, Heartbeat, Owner, Result, Timestamp, validate_ttl};

use crate::{MemoryBackend, lock};

/// Each owner's last beat: when it arrived and when it expires.
#[derive(Default)]
pub(crate) struct Heartbeats {
    beats: HashMap<Owner, Stamp>,
}

/// One owner's last beat.
#[derive(Clone, Copy)]
struct Stamp {
    at: Timestamp,
    expires: Timestamp,
}

impl Heartbeats {
    /// Whether `owner` beat once and its last beat has expired.
    pub(crate) fn is_dead(&self, owner: &Owner, now: Timestamp) -> bool {
        self.beats
            .get(owner)
            .is_some_and(|beat| beat.expires <= now)
    }
}

#[async_trait]
impl Heartbeat for MemoryBackend {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        let at = self.now();
        let expires = at.saturating_add(ttl);
        lock(&self.inner.heartbeats)
            .beats
            .insert(owner.clone(), Stamp { at, expires });
        Ok(())
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        let now = self.now();
        let heartbeats = lock(&self.inner.heartbeats);
        Ok(heartbeats
            .beats
            .get(owner)
            .is_some_and(|beat| beat.expires > now))
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let now = self.now();
        let heartbeats = lock(&self.inner.heartbeats);
        let mut dead: Vec<Owner> = heartbeats
            .beats
            .iter()
            .filter(|(_, beat)| beat.expires <= now)
            .map(|(owner, _)| owner.clone())
            .collect();
        dead.sort();
        Ok(dead)
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let now = self.now();
        let heartbeats = lock(&self.inner.heartbeats);
        Ok(heartbeats.beats.get(owner).map(|beat| Beat {
            at: Some(beat.at),
            expires_at: beat.expires,
            alive: beat.expires > now,
        }))
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        lock(&self.inner.heartbeats).beats.remove(owner);
        Ok(())
    }
}
