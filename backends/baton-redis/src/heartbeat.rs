//! [`Heartbeat`] on Redis: a key set with `PX` per owner, and a sorted set of expiries so that
//! dead owners stay listed until forgotten, and a hash of when each owner's last beat arrived.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Beat, Heartbeat, Owner, Result, Timestamp, validate_ttl};
use redis::AsyncCommands;

use crate::{RedisBackend, from_redis, millis, unexpected, value};

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
            .key(keys.beat_times())
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

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let keys = &self.inner.keys;
        let reply: redis::Value = self
            .inner
            .scripts
            .last_beat
            .key(keys.beats())
            .key(keys.beat_times())
            .arg(owner.as_str())
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        let fields = value::array(reply)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let [at, expires_at, now]: [redis::Value; 3] =
            fields.try_into().map_err(|fields: Vec<_>| {
                unexpected(format!("a last beat of {} fields", fields.len()))
            })?;
        let (at, expires_at, now) = (value::int(at)?, value::int(expires_at)?, value::int(now)?);
        Ok(Some(Beat {
            at: (at >= 0).then(|| Timestamp::from_millis(at)),
            expires_at: Timestamp::from_millis(expires_at),
            alive: expires_at > now,
        }))
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        let keys = &self.inner.keys;
        let _: redis::Value = self
            .inner
            .scripts
            .forget
            .key(keys.beats())
            .key(keys.heartbeat(owner))
            .key(keys.beat_times())
            .arg(owner.as_str())
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        Ok(())
    }
}
