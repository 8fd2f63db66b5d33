//! [`Claim`] on PostgreSQL: one row per item, unclaimed items ordered by a sequence number,
//! every grant and return one statement.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Claim, ClaimLease, Error, FencingToken, ItemId, ItemStatus, Lease, Owner, PoolName, Result,
    Timestamp, validate_items, validate_ttl,
};
use baton_sql::from_sqlx;
use sqlx::Row;

use crate::{PostgresBackend, millis};

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Backend {
        message: format!("corrupt claim row: {what}"),
        transient: false,
        source: None,
    }
}

fn token_of(claim: &ClaimLease) -> i64 {
    i64::try_from(claim.lease.token().get()).unwrap_or(i64::MAX)
}

/// The items of `rows`' `item` column, sorted.
fn sorted_items(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<ItemId>> {
    let mut items = rows
        .iter()
        .map(|row| {
            let item: String = row.try_get("item").map_err(from_sqlx)?;
            ItemId::new(item).map_err(corrupt)
        })
        .collect::<Result<Vec<_>>>()?;
    items.sort();
    Ok(items)
}

#[async_trait]
impl Claim for PostgresBackend {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        let mut seen = HashSet::new();
        let unique: Vec<&str> = items
            .iter()
            .map(ItemId::as_str)
            .filter(|item| seen.insert(*item))
            .collect();
        let rows = sqlx::query(self.inner.shared.sql.claim_add.clone())
            .bind(pool.as_str())
            .bind(&unique)
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(rows.len() as u64)
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        let items: Vec<&str> = items.iter().map(ItemId::as_str).collect();
        let done = sqlx::query(self.inner.shared.sql.claim_remove.clone())
            .bind(pool.as_str())
            .bind(&items)
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        let rows = sqlx::query(self.inner.shared.sql.claim_items.clone())
            .bind(pool.as_str())
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let item: String = row.try_get("item").map_err(from_sqlx)?;
            let owner: Option<String> = row.try_get("owner").map_err(from_sqlx)?;
            let token: i64 = row.try_get("token").map_err(from_sqlx)?;
            let expires_at: Option<i64> = row.try_get("expires_at").map_err(from_sqlx)?;
            let holder = match owner {
                Some(owner) => Some(Lease::granted(
                    Owner::new(owner).map_err(corrupt)?,
                    FencingToken::new(u64::try_from(token).map_err(corrupt)?),
                    Timestamp::from_millis(expires_at.unwrap_or(0)),
                )),
                None => None,
            };
            items.push(ItemStatus {
                item: ItemId::new(item).map_err(corrupt)?,
                holder,
            });
        }
        items.sort_by(|a, b| a.item.cmp(&b.item));
        Ok(items)
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        validate_ttl(ttl)?;
        let Some(row) = sqlx::query(self.inner.shared.sql.claim_take.clone())
            .bind(pool.as_str())
            .bind(owner.as_str())
            .bind(millis(ttl))
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?
        else {
            return Ok(None);
        };
        let item: String = row.try_get("item").map_err(from_sqlx)?;
        let token: i64 = row.try_get("token").map_err(from_sqlx)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(from_sqlx)?;
        Ok(Some(ClaimLease {
            pool: pool.clone(),
            item: ItemId::new(item).map_err(corrupt)?,
            lease: Lease::granted(
                owner.clone(),
                FencingToken::new(u64::try_from(token).map_err(corrupt)?),
                Timestamp::from_millis(expires_at),
            ),
        }))
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        validate_ttl(ttl)?;
        let row = sqlx::query(self.inner.shared.sql.claim_renew.clone())
            .bind(claim.pool.as_str())
            .bind(claim.item.as_str())
            .bind(claim.lease.owner().as_str())
            .bind(token_of(claim))
            .bind(millis(ttl))
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| claim.lost())?;
        let expires_at: i64 = row.try_get("expires_at").map_err(from_sqlx)?;
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
        let done = sqlx::query(self.inner.shared.sql.claim_release.clone())
            .bind(claim.pool.as_str())
            .bind(claim.item.as_str())
            .bind(claim.lease.owner().as_str())
            .bind(token_of(claim))
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(claim.lost())
        }
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        let done = sqlx::query(self.inner.shared.sql.claim_release_all.clone())
            .bind(pool.as_str())
            .bind(owner.as_str())
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        let rows = sqlx::query(self.inner.shared.sql.claim_reap.clone())
            .bind(pool.as_str())
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        sorted_items(&rows)
    }
}
