//! [`Claim`] on Redis: per pool a free set in FIFO order, a held set by claim expiry, the
//! leases, the last token per item and the items of each owner (see `lua/claims.lua`).

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Claim, ClaimLease, FencingToken, ItemId, ItemStatus, Lease, Owner, PoolName, Result, Timestamp,
    validate_items, validate_ttl,
};
use redis::Value;

use crate::{RedisBackend, from_redis, millis, unexpected, value};

/// A lease as stored: `token|expires|owner`.
fn stored_lease(text: &str) -> Result<Lease> {
    let mut parts = text.splitn(3, '|');
    let (Some(token), Some(expires), Some(owner)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unexpected(format!("claim lease {text:?}")));
    };
    let token: u64 = token
        .parse()
        .map_err(|_| unexpected(format!("claim token {token:?}")))?;
    let expires: i64 = expires
        .parse()
        .map_err(|_| unexpected(format!("claim expiry {expires:?}")))?;
    Ok(Lease::granted(
        Owner::new(owner)?,
        FencingToken::new(token),
        Timestamp::from_millis(expires),
    ))
}

impl RedisBackend {
    /// Runs a claim script on `pool` with `args` after the pool's base.
    async fn pool_script(
        &self,
        script: &redis::Script,
        pool: &PoolName,
        args: &[&str],
    ) -> Result<Value> {
        let keys = &self.inner.keys;
        let mut invocation = script.key(keys.pool_free(pool));
        invocation.key(keys.beats()).arg(keys.pool(pool));
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)
    }

    async fn items_script(
        &self,
        script: &redis::Script,
        pool: &PoolName,
        items: &[ItemId],
    ) -> Result<u64> {
        validate_items(items)?;
        if items.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = items.iter().map(ItemId::as_str).collect();
        let reply = self.pool_script(script, pool, &names).await?;
        u64::try_from(value::int(reply)?).map_err(|_| unexpected("a negative count"))
    }
}

#[async_trait]
impl Claim for RedisBackend {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        self.items_script(&self.inner.scripts.claim_add, pool, items)
            .await
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        self.items_script(&self.inner.scripts.claim_remove, pool, items)
            .await
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        let reply = self
            .pool_script(&self.inner.scripts.claim_items, pool, &[])
            .await?;
        let mut parts = value::array(reply)?.into_iter();
        let (Some(free), Some(held)) = (parts.next(), parts.next()) else {
            return Err(unexpected("claim items reply"));
        };
        let mut listed = Vec::new();
        for item in value::array(free)? {
            listed.push(ItemStatus {
                item: ItemId::new(value::text(item)?)?,
                holder: None,
            });
        }
        for entry in value::array(held)? {
            let mut pair = value::array(entry)?.into_iter();
            let (Some(item), Some(lease)) = (pair.next(), pair.next()) else {
                return Err(unexpected("claim items entry"));
            };
            listed.push(ItemStatus {
                item: ItemId::new(value::text(item)?)?,
                holder: value::opt_text(lease)?
                    .map(|lease| stored_lease(&lease))
                    .transpose()?,
            });
        }
        listed.sort_by(|a, b| a.item.cmp(&b.item));
        Ok(listed)
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        validate_ttl(ttl)?;
        let ttl = millis(ttl).to_string();
        let reply = self
            .pool_script(&self.inner.scripts.claim, pool, &[owner.as_str(), &ttl])
            .await?;
        if matches!(reply, Value::Nil) {
            return Ok(None);
        }
        let mut parts = value::array(reply)?.into_iter();
        let (Some(item), Some(token), Some(expires)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(unexpected("claim reply"));
        };
        let token = u64::try_from(value::int(token)?).map_err(|_| unexpected("claim token"))?;
        Ok(Some(ClaimLease {
            pool: pool.clone(),
            item: ItemId::new(value::text(item)?)?,
            lease: Lease::granted(
                owner.clone(),
                FencingToken::new(token),
                Timestamp::from_millis(value::int(expires)?),
            ),
        }))
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        validate_ttl(ttl)?;
        let token = claim.lease.token().to_string();
        let ttl = millis(ttl).to_string();
        let reply = self
            .pool_script(
                &self.inner.scripts.claim_renew,
                &claim.pool,
                &[
                    claim.item.as_str(),
                    claim.lease.owner().as_str(),
                    &token,
                    &ttl,
                ],
            )
            .await?;
        let (status, mut rest) = value::status(reply)?;
        if status != "ok" {
            return Err(claim.lost());
        }
        let expires = value::int(rest.next().ok_or_else(|| unexpected("renew reply"))?)?;
        Ok(ClaimLease {
            lease: Lease::granted(
                claim.lease.owner().clone(),
                claim.lease.token(),
                Timestamp::from_millis(expires),
            ),
            ..claim.clone()
        })
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        let token = claim.lease.token().to_string();
        let reply = self
            .pool_script(
                &self.inner.scripts.claim_release,
                &claim.pool,
                &[claim.item.as_str(), claim.lease.owner().as_str(), &token],
            )
            .await?;
        let (status, _) = value::status(reply)?;
        if status == "ok" {
            Ok(())
        } else {
            Err(claim.lost())
        }
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        let reply = self
            .pool_script(
                &self.inner.scripts.claim_release_all,
                pool,
                &[owner.as_str()],
            )
            .await?;
        u64::try_from(value::int(reply)?).map_err(|_| unexpected("a negative count"))
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        let reply = self
            .pool_script(&self.inner.scripts.claim_reap, pool, &[])
            .await?;
        value::array(reply)?
            .into_iter()
            .map(|item| ItemId::new(value::text(item)?))
            .collect()
    }
}
