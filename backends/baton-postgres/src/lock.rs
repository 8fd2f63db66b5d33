//! [`Lock`] on PostgreSQL: one row per name, a whole set granted in one transaction that locks
//! its rows in name order, renew and release as compare-and-set on `(name, owner, token)`.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, Error, FencingToken, Lease, Lock, LockHolder, LockLease, LockName, LockRequest, Owner,
    Result, Timestamp, validate_ttl,
};
use baton_sql::from_sqlx;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::{PostgresBackend, millis};

/// How often a waiter looks again when no release was heard: a holder may expire.
const RECHECK_INTERVAL: Duration = Duration::from_millis(25);

fn names_of(names: &[LockName]) -> Vec<&str> {
    names.iter().map(LockName::as_str).collect()
}

fn token_of(lease: &Lease) -> i64 {
    i64::try_from(lease.token().get()).unwrap_or(i64::MAX)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Backend {
        message: format!("corrupt lock row: {what}"),
        transient: false,
        source: None,
    }
}

/// A held row of the locks table as a [`LockHolder`].
fn holder(row: &PgRow) -> Result<LockHolder> {
    let name: String = row.try_get("name").map_err(from_sqlx)?;
    let owner: Option<String> = row.try_get("owner").map_err(from_sqlx)?;
    let token: i64 = row.try_get("token").map_err(from_sqlx)?;
    let expires_at: Option<i64> = row.try_get("expires_at").map_err(from_sqlx)?;
    let reason: String = row.try_get("reason").map_err(from_sqlx)?;
    let since: Option<i64> = row.try_get("since").map_err(from_sqlx)?;
    let owner = Owner::new(owner.unwrap_or_default()).map_err(corrupt)?;
    Ok(LockHolder {
        name: LockName::new(name).map_err(corrupt)?,
        lease: Lease::granted(
            owner,
            FencingToken::new(u64::try_from(token).map_err(corrupt)?),
            Timestamp::from_millis(expires_at.unwrap_or(0)),
        ),
        reason,
        since: Timestamp::from_millis(since.unwrap_or(0)),
    })
}

impl PostgresBackend {
    /// One attempt at taking every lock of `request`, in one transaction.
    async fn try_acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let names = names_of(request.names());
        let mut tx = baton_sql::begin(&self.inner.shared.pool, None).await?;
        sqlx::query(self.inner.shared.sql.lock_insert.clone())
            .bind(&names)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let rows = sqlx::query(self.inner.shared.sql.lock_select.clone())
            .bind(&names)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let mut busy = Vec::new();
        let mut last_token = 0_i64;
        let mut now = 0_i64;
        for row in &rows {
            last_token = last_token.max(row.try_get::<i64, _>("token").map_err(from_sqlx)?);
            now = row.try_get("now").map_err(from_sqlx)?;
            if row.try_get::<bool, _>("live").map_err(from_sqlx)? {
                busy.push(holder(row)?);
            }
        }
        if !busy.is_empty() {
            tx.rollback().await.map_err(from_sqlx)?;
            busy.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(Acquire::Busy(busy));
        }
        let token = last_token + 1;
        sqlx::query(self.inner.shared.sql.lock_grant.clone())
            .bind(&names)
            .bind(request.owner().as_str())
            .bind(token)
            .bind(millis(request.ttl()))
            .bind(request.reason())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        let now = Timestamp::from_millis(now);
        Ok(Acquire::Granted(LockLease {
            names: request.names().to_vec(),
            lease: Lease::granted(
                request.owner().clone(),
                FencingToken::new(u64::try_from(token).map_err(corrupt)?),
                now.saturating_add(request.ttl()),
            ),
            reason: request.reason().to_owned(),
        }))
    }
}

#[async_trait]
impl Lock for PostgresBackend {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let deadline = tokio::time::Instant::now() + request.wait();
        loop {
            let released = self.inner.lock_changed.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = self.try_acquire(request).await?;
            let waited_out = tokio::time::Instant::now() >= deadline;
            if matches!(outcome, Acquire::Granted(_)) || waited_out {
                return Ok(outcome);
            }
            let recheck = tokio::time::Instant::now() + RECHECK_INTERVAL;
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(recheck.min(deadline)) => {}
            }
        }
    }

    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease> {
        validate_ttl(ttl)?;
        let names = names_of(&lease.names);
        let mut tx = baton_sql::begin(&self.inner.shared.pool, None).await?;
        let rows = sqlx::query(self.inner.shared.sql.lock_renew.clone())
            .bind(&names)
            .bind(lease.lease.owner().as_str())
            .bind(token_of(&lease.lease))
            .bind(millis(ttl))
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if rows.len() != names.len() {
            tx.rollback().await.map_err(from_sqlx)?;
            return Err(lease.lost());
        }
        let expires_at: i64 = match rows.first() {
            Some(row) => row.try_get("expires_at").map_err(from_sqlx)?,
            None => return Err(lease.lost()),
        };
        tx.commit().await.map_err(from_sqlx)?;
        Ok(LockLease {
            names: lease.names.clone(),
            lease: Lease::granted(
                lease.lease.owner().clone(),
                lease.lease.token(),
                Timestamp::from_millis(expires_at),
            ),
            reason: lease.reason.clone(),
        })
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        let names = names_of(&lease.names);
        let rows = sqlx::query(self.inner.shared.sql.lock_release.clone())
            .bind(&names)
            .bind(lease.lease.owner().as_str())
            .bind(token_of(&lease.lease))
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        self.inner.lock_changed.notify_waiters();
        let mut all_current = rows.len() == names.len();
        for row in &rows {
            all_current &= row
                .try_get::<Option<bool>, _>("live")
                .map_err(from_sqlx)?
                .unwrap_or(false);
        }
        if all_current {
            Ok(())
        } else {
            Err(lease.lost())
        }
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        let rows = sqlx::query(self.inner.shared.sql.lock_holders.clone())
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        let mut holders = rows.iter().map(holder).collect::<Result<Vec<_>>>()?;
        holders.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(holders)
    }
}
