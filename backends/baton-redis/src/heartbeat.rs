//! [`Heartbeat`] on Redis: a key set with `PX` per owner, and a sorted set of expiries so that
//! dead owners stay listed until forgotten.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Heartbeat, Owner, Result, validate_ttl};
use redis::AsyncCommands;

use crate::{RedisBackend, from_redis, millis, value};

#[async_trait]
impl Heartbeat for RedisBackend {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        let keys = &self.inner.keys;
        let _: redis::Value = self
            .inner
            .scripts
            .beat
            .key(keys.beats())
            .key(keys.heartbeat(owner))
            .arg(owner.as_str())
            .arg(millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        self.connection()
            .exists(self.inner.keys.heartbeat(owner))
            .await
            .map_err(from_redis)
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let reply: redis::Value = self
            .inner
            .scripts
            .dead
            .key(self.inner.keys.beats())
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        let mut dead = value::array(reply)?
            .into_iter()
            .map(|owner| Owner::new(value::text(owner)?))
            .collect::<Result<Vec<_>>>()?;
        dead.sort();
        Ok(dead)
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        let keys = &self.inner.keys;
        let _: redis::Value = self
            .inner
            .scripts
            .forget
            .key(keys.beats())
            .key(keys.heartbeat(owner))
            .arg(owner.as_str())
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        Ok(())
    }
}
