//! [`Claim`] on MySQL: one row per (pool, item) ever added. A removed item stays as a
//! tombstone (`present = 0`) so that its tokens keep increasing when it is added again.
//! Unclaimed items are ordered by `seq`, drawn from the `claim_seq` counter row, which also
//! serializes the calls that return items to the pool.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Claim, ClaimLease, FencingToken, ItemId, ItemStatus, Lease, Owner, PoolName, Result, Timestamp,
    validate_items, validate_ttl,
};
use baton_sql::from_sqlx;
use sqlx::{MySqlConnection, Row};

use crate::MysqlStore;
use crate::sql::{TxError, millis, now, retrying};

const LOCK_SEQ: &str = "SELECT value FROM {prefix}counters WHERE name = 'claim_seq' FOR UPDATE";
const BUMP_SEQ: &str = "UPDATE {prefix}counters SET value = value + ? WHERE name = 'claim_seq'";
const LOCK_ITEMS: &str = "SELECT item, present FROM {prefix}claims WHERE pool = ? AND item IN ({in}) \
     FOR UPDATE";
const ADD_ITEMS: &str = "INSERT INTO {prefix}claims (pool, item, present, owner, token, \
     expires_at, seq) VALUES {rows} ON DUPLICATE KEY UPDATE present = 1, owner = NULL, \
     expires_at = NULL, seq = VALUES(seq)";
const ITEM_ROW: &str = "(?, ?, 1, NULL, 0, NULL, ?)";
const REMOVE: &str = "UPDATE {prefix}claims SET present = 0, owner = NULL, expires_at = NULL \
     WHERE pool = ? AND present = 1 AND item IN ({in})";
const ITEMS: &str = "SELECT item, owner, token, expires_at FROM {prefix}claims \
     WHERE pool = ? AND present = 1 ORDER BY item";
const OLDEST_UNCLAIMED: &str = "SELECT item, token FROM {prefix}claims WHERE pool = ? \
     AND present = 1 AND owner IS NULL ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED";
const OLDEST_EXPIRED: &str = "SELECT item, token FROM {prefix}claims WHERE pool = ? \
     AND present = 1 AND owner IS NOT NULL AND expires_at <= ? ORDER BY expires_at, item \
     LIMIT 1 FOR UPDATE SKIP LOCKED";
const GRANT: &str = "UPDATE {prefix}claims SET owner = ?, token = ?, expires_at = ? \
     WHERE pool = ? AND item = ?";
const LOCK_CLAIM: &str = "SELECT owner, token, expires_at FROM {prefix}claims \
     WHERE pool = ? AND item = ? AND present = 1 FOR UPDATE";
const RENEW: &str = "UPDATE {prefix}claims SET expires_at = ? WHERE pool = ? AND item = ?";
const UNCLAIM: &str = "UPDATE {prefix}claims SET owner = NULL, expires_at = NULL, seq = ? \
     WHERE pool = ? AND item = ?";
const HELD_BY: &str = "SELECT item FROM {prefix}claims WHERE pool = ? AND present = 1 \
     AND owner = ? ORDER BY item FOR UPDATE";
const DEAD_OWNERS: &str = "SELECT owner FROM {prefix}heartbeats WHERE expires_at <= ?";
const HELD: &str = "SELECT item, owner, expires_at FROM {prefix}claims WHERE pool = ? \
     AND present = 1 AND owner IS NOT NULL ORDER BY item FOR UPDATE";

/// Rows per multi-row statement.
const CHUNK: usize = 1000;

/// `items` without repeats, in their first order.
fn distinct(items: &[ItemId]) -> Vec<&ItemId> {
    let mut seen = HashSet::new();
    items.iter().filter(|item| seen.insert(*item)).collect()
}

fn token_i64(token: FencingToken) -> i64 {
    i64::try_from(token.get()).unwrap_or(i64::MAX)
}

impl MysqlStore {
    /// Takes `n` consecutive sequence numbers; returns the first. Locks the counter row until
    /// the transaction ends.
    async fn take_seqs(&self, conn: &mut MySqlConnection, n: usize) -> Result<i64, TxError> {
        let value: i64 = sqlx::query(self.stmt(LOCK_SEQ))
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query(self.stmt(BUMP_SEQ))
            .bind(n)
            .execute(&mut *conn)
            .await?;
        Ok(value + 1)
    }

    async fn add_once(&self, pool: &PoolName, items: &[&ItemId]) -> Result<u64, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let mut seq = self.take_seqs(&mut tx, items.len()).await?;
        let mut added = 0;
        for chunk in items.chunks(CHUNK) {
            let mut query = sqlx::query(self.stmt_in(LOCK_ITEMS, chunk.len())).bind(pool.as_str());
            for item in chunk {
                query = query.bind(item.as_str());
            }
            let present: HashSet<String> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .filter(|row| row.try_get::<i8, _>(1).is_ok_and(|present| present != 0))
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?;
            let new: Vec<&&ItemId> = chunk
                .iter()
                .filter(|item| !present.contains(item.as_str()))
                .collect();
            if new.is_empty() {
                continue;
            }
            let mut insert =
                sqlx::query(self.inner.statements.rows(ADD_ITEMS, ITEM_ROW, new.len()));
            for item in &new {
                insert = insert.bind(pool.as_str()).bind(item.as_str()).bind(seq);
                seq += 1;
            }
            insert.execute(&mut *tx).await?;
            added += new.len() as u64;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn claim_once(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let mut found = sqlx::query(self.stmt(OLDEST_UNCLAIMED))
            .bind(pool.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            found = sqlx::query(self.stmt(OLDEST_EXPIRED))
                .bind(pool.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let Some(row) = found else {
            tx.commit().await?;
            return Ok(None);
        };
        let item: String = row.try_get(0)?;
        let token: i64 = row.try_get::<i64, _>(1)? + 1;
        let expires_at = now.saturating_add(millis(ttl));
        sqlx::query(self.stmt(GRANT))
            .bind(owner.as_str())
            .bind(token)
            .bind(expires_at)
            .bind(pool.as_str())
            .bind(&item)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(ClaimLease {
            pool: pool.clone(),
            item: ItemId::new(&item)?,
            lease: Lease::granted(
                owner.clone(),
                FencingToken::new(u64::try_from(token).unwrap_or(0)),
                Timestamp::from_millis(expires_at),
            ),
        }))
    }

    /// Locks the claim's row and checks that it is current at the server's now, which it
    /// returns.
    async fn check_claim(
        &self,
        conn: &mut MySqlConnection,
        claim: &ClaimLease,
    ) -> Result<i64, TxError> {
        let now = now(&mut *conn).await?;
        let row = sqlx::query(self.stmt(LOCK_CLAIM))
            .bind(claim.pool.as_str())
            .bind(claim.item.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let current = match row {
            Some(row) => {
                let owner: Option<String> = row.try_get(0)?;
                let token: i64 = row.try_get(1)?;
                let expires_at: Option<i64> = row.try_get(2)?;
                owner.as_deref() == Some(claim.lease.owner().as_str())
                    && token == token_i64(claim.lease.token())
                    && expires_at.is_some_and(|expires| expires > now)
            }
            None => false,
        };
        if current {
            Ok(now)
        } else {
            Err(claim.lost().into())
        }
    }

    async fn renew_claim_once(
        &self,
        claim: &ClaimLease,
        ttl: Duration,
    ) -> Result<ClaimLease, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = self.check_claim(&mut tx, claim).await?;
        let expires_at = now.saturating_add(millis(ttl));
        sqlx::query(self.stmt(RENEW))
            .bind(expires_at)
            .bind(claim.pool.as_str())
            .bind(claim.item.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ClaimLease {
            lease: Lease::granted(
                claim.lease.owner().clone(),
                claim.lease.token(),
                Timestamp::from_millis(expires_at),
            ),
            ..claim.clone()
        })
    }

    async fn unclaim(
        &self,
        conn: &mut MySqlConnection,
        pool: &PoolName,
        items: &[String],
    ) -> Result<(), TxError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut seq = self.take_seqs(&mut *conn, items.len()).await?;
        for item in items {
            sqlx::query(self.stmt(UNCLAIM))
                .bind(seq)
                .bind(pool.as_str())
                .bind(item)
                .execute(&mut *conn)
                .await?;
            seq += 1;
        }
        Ok(())
    }

    async fn release_claim_once(&self, claim: &ClaimLease) -> Result<(), TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        // The counter row first, as every call that takes sequence numbers does.
        self.take_seqs(&mut tx, 0).await?;
        self.check_claim(&mut tx, claim).await?;
        self.unclaim(&mut tx, &claim.pool, &[claim.item.as_str().to_owned()])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_all_once(&self, pool: &PoolName, owner: &Owner) -> Result<u64, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        self.take_seqs(&mut tx, 0).await?;
        let items: Vec<String> = sqlx::query(self.stmt(HELD_BY))
            .bind(pool.as_str())
            .bind(owner.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        self.unclaim(&mut tx, pool, &items).await?;
        tx.commit().await?;
        Ok(items.len() as u64)
    }

    async fn reap_once(&self, pool: &PoolName) -> Result<Vec<ItemId>, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        self.take_seqs(&mut tx, 0).await?;
        let now = now(&mut tx).await?;
        let dead: HashSet<String> = sqlx::query(self.stmt(DEAD_OWNERS))
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut items = Vec::new();
        for row in sqlx::query(self.stmt(HELD))
            .bind(pool.as_str())
            .fetch_all(&mut *tx)
            .await?
        {
            let item: String = row.try_get(0)?;
            let owner: String = row.try_get(1)?;
            let expires_at: Option<i64> = row.try_get(2)?;
            if expires_at.is_none_or(|expires| expires <= now) || dead.contains(&owner) {
                items.push(item);
            }
        }
        self.unclaim(&mut tx, pool, &items).await?;
        tx.commit().await?;
        Ok(items.iter().map(ItemId::new).collect::<Result<Vec<_>>>()?)
    }
}

#[async_trait]
impl Claim for MysqlStore {
    async fn add(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        let items = distinct(items);
        if items.is_empty() {
            return Ok(0);
        }
        retrying(|| self.add_once(pool, &items)).await
    }

    async fn remove(&self, pool: &PoolName, items: &[ItemId]) -> Result<u64> {
        validate_items(items)?;
        let items = distinct(items);
        let mut removed = 0;
        for chunk in items.chunks(CHUNK) {
            let mut query = sqlx::query(self.stmt_in(REMOVE, chunk.len())).bind(pool.as_str());
            for item in chunk {
                query = query.bind(item.as_str());
            }
            removed += query
                .execute(&self.inner.pool)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
        }
        Ok(removed)
    }

    async fn items(&self, pool: &PoolName) -> Result<Vec<ItemStatus>> {
        let rows = sqlx::query(self.stmt(ITEMS))
            .bind(pool.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let item: String = row.try_get(0).map_err(from_sqlx)?;
            let owner: Option<String> = row.try_get(1).map_err(from_sqlx)?;
            let token: i64 = row.try_get(2).map_err(from_sqlx)?;
            let expires_at: Option<i64> = row.try_get(3).map_err(from_sqlx)?;
            let holder = match owner {
                Some(owner) => Some(Lease::granted(
                    Owner::new(owner)?,
                    FencingToken::new(u64::try_from(token).unwrap_or(0)),
                    Timestamp::from_millis(expires_at.unwrap_or_default()),
                )),
                None => None,
            };
            items.push(ItemStatus {
                item: ItemId::new(item)?,
                holder,
            });
        }
        Ok(items)
    }

    async fn claim(
        &self,
        pool: &PoolName,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<ClaimLease>> {
        validate_ttl(ttl)?;
        retrying(|| self.claim_once(pool, owner, ttl)).await
    }

    async fn renew_claim(&self, claim: &ClaimLease, ttl: Duration) -> Result<ClaimLease> {
        validate_ttl(ttl)?;
        retrying(|| self.renew_claim_once(claim, ttl)).await
    }

    async fn release_claim(&self, claim: &ClaimLease) -> Result<()> {
        retrying(|| self.release_claim_once(claim)).await
    }

    async fn release_all(&self, pool: &PoolName, owner: &Owner) -> Result<u64> {
        retrying(|| self.release_all_once(pool, owner)).await
    }

    async fn reap_dead(&self, pool: &PoolName) -> Result<Vec<ItemId>> {
        retrying(|| self.reap_once(pool)).await
    }
}
