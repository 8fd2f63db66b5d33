//! [`Claim`] on SQLite: one row per item ever added, moved between unclaimed and claimed by one
//! `UPDATE` inside a `BEGIN IMMEDIATE` transaction.
//!
//! Unclaimed items are ordered by `seq`, the pool's next number when they became unclaimed, so
//! a returned item goes to the back. A removed item keeps its row as a tombstone, so that its
//! tokens go on increasing if it is added again.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Claim, ClaimLease, Error, FencingToken, ItemId, ItemStatus, Lease, Owner, PoolName, Result,
    Timestamp, validate_items, validate_ttl,
};
use baton_sql::from_sqlx;

use crate::{SqliteBackend, Write, millis};

fn corrupt(error: impl std::fmt::Display) -> Error {
    Error::Backend {
        message: format!("corrupt claim row: {error}"),
        transient: false,
        source: None,
    }
}

fn db_token(token: FencingToken) -> i64 {
    i64::try_from(token.get()).unwrap_or(i64::MAX)
}

impl SqliteBackend {
    async fn next_seq(&self, write: &mut Write<'_>, pool: &PoolName) -> Result<i64> {
        sqlx::query_scalar(self.sql().next_seq.clone())
            .bind(pool.as_str().to_owned())
            .fetch_one(&mut *write.tx)
            .await
            .map_err(from_sqlx)
    }

    /// Returns `items` to the back of the pool, in order.
    async fn unclaim(
        &self,
        write: &mut Write<'_>,
        pool: &PoolName,
        items: &[String],
    ) -> Result<()> {
        let mut seq = self.next_seq(write, pool).await?;
        for item in items {
            sqlx::query(self.sql().unclaim_item.clone())
                .bind(seq)
                .bind(pool.as_str().to_owned())
                .bind(item.clone())
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            seq += 1;
        }
        Ok(())
    }
}

fn item_ids(items: Vec<String>) -> Result<Vec<ItemId>> {
    items
        .into_iter()
        .map(|item| ItemId::new(item).map_err(corrupt))
        .collect()
}

#[async_trait]
impl Claim for SqliteBackend {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        if items.is_empty() {
            return Ok(0);
        }
        let mut write = self.write().await?;
        let mut seq = self.next_seq(&mut write, pool).await?;
        let mut added = 0;
        for item in items {
            let inserted: Option<String> = sqlx::query_scalar(self.sql().add_item.clone())
                .bind(pool.as_str().to_owned())
                .bind(item.as_str().to_owned())
                .bind(seq)
                .fetch_optional(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            if inserted.is_some() {
                added += 1;
                seq += 1;
            }
        }
        write.commit().await?;
        Ok(added)
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        if items.is_empty() {
            return Ok(0);
        }
        let mut write = self.write().await?;
        let mut removed = 0;
        for item in items {
            removed += sqlx::query(self.sql().remove_item.clone())
                .bind(pool.as_str().to_owned())
                .bind(item.as_str().to_owned())
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
        }
        write.commit().await?;
        Ok(removed)
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        let rows: Vec<(String, Option<String>, i64, Option<i64>)> =
            sqlx::query_as(self.sql().pool_items.clone())
                .bind(pool.as_str().to_owned())
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
        rows.into_iter()
            .map(|(item, owner, token, expires_at)| {
                let holder = match (owner, expires_at) {
                    (Some(owner), Some(expires_at)) => Some(Lease::granted(
                        Owner::new(owner).map_err(corrupt)?,
                        FencingToken::new(u64::try_from(token).map_err(corrupt)?),
                        Timestamp::from_millis(expires_at),
                    )),
                    _ => None,
                };
                Ok(ItemStatus {
                    item: ItemId::new(item).map_err(corrupt)?,
                    holder,
                })
            })
            .collect()
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        validate_ttl(ttl)?;
        let mut write = self.write().await?;
        let mut item: Option<String> = sqlx::query_scalar(self.sql().oldest_unclaimed.clone())
            .bind(pool.as_str().to_owned())
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        if item.is_none() {
            item = sqlx::query_scalar(self.sql().oldest_expired.clone())
                .bind(pool.as_str().to_owned())
                .bind(write.now)
                .fetch_optional(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
        }
        let Some(item) = item else {
            write.rollback().await?;
            return Ok(None);
        };
        let expires_at = Timestamp::from_millis(write.now).saturating_add(ttl);
        let token: i64 = sqlx::query_scalar(self.sql().grant_claim.clone())
            .bind(owner.as_str().to_owned())
            .bind(expires_at.as_millis())
            .bind(pool.as_str().to_owned())
            .bind(item.clone())
            .fetch_one(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        write.commit().await?;
        Ok(Some(ClaimLease {
            pool: pool.clone(),
            item: ItemId::new(item).map_err(corrupt)?,
            lease: Lease::granted(
                owner.clone(),
                FencingToken::new(u64::try_from(token).map_err(corrupt)?),
                expires_at,
            ),
        }))
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        validate_ttl(ttl)?;
        let expires_at: Option<i64> = sqlx::query_scalar(self.sql().renew_claim.clone())
            .bind(millis(ttl))
            .bind(claim.pool.as_str().to_owned())
            .bind(claim.item.as_str().to_owned())
            .bind(claim.lease.owner().as_str().to_owned())
            .bind(db_token(claim.lease.token()))
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?;
        let expires_at = expires_at.ok_or_else(|| claim.lost())?;
        Ok(ClaimLease {
            lease: Lease::granted(
                claim.lease.owner().clone(),
                claim.lease.token(),
                Timestamp::from_millis(expires_at),
            ),
            ..claim.clone()
        })
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        let mut write = self.write().await?;
        let seq = self.next_seq(&mut write, &claim.pool).await?;
        let released = sqlx::query(self.sql().release_claim.clone())
            .bind(seq)
            .bind(claim.pool.as_str().to_owned())
            .bind(claim.item.as_str().to_owned())
            .bind(claim.lease.owner().as_str().to_owned())
            .bind(db_token(claim.lease.token()))
            .bind(write.now)
            .execute(&mut *write.tx)
            .await
            .map_err(from_sqlx)?
            .rows_affected();
        if released == 0 {
            write.rollback().await?;
            return Err(claim.lost());
        }
        write.commit().await
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        let mut write = self.write().await?;
        let items: Vec<String> = sqlx::query_scalar(self.sql().owned_items.clone())
            .bind(pool.as_str().to_owned())
            .bind(owner.as_str().to_owned())
            .fetch_all(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        self.unclaim(&mut write, pool, &items).await?;
        write.commit().await?;
        Ok(items.len() as u64)
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        let mut write = self.write().await?;
        let items: Vec<String> = sqlx::query_scalar(self.sql().dead_items.clone())
            .bind(pool.as_str().to_owned())
            .bind(write.now)
            .bind(write.now)
            .fetch_all(&mut *write.tx)
            .await
            .map_err(from_sqlx)?;
        self.unclaim(&mut write, pool, &items).await?;
        write.commit().await?;
        item_ids(items)
    }
}
