//! [`Lock`] on SQLite: one row per name; acquire is one `BEGIN IMMEDIATE` transaction over the
//! sorted names, all or nothing.
//!
//! The token of a grant is one more than the largest last token of its names, written to every
//! name. Renew and release are compare-and-set on name, owner and token (and bump the row's
//! version), so a deposed holder can never touch a newer grant.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, Error, FencingToken, Lease, Lock, LockHolder, LockLease, LockName, LockRequest, Owner,
    Result, Timestamp, validate_ttl,
};
use baton_sql::from_sqlx;

use crate::{LOCK_RECHECK, SqliteBackend};

/// A row of the locks table.
#[derive(sqlx::FromRow)]
struct LockRow {
    name: String,
    owner: Option<String>,
    token: i64,
    expires_at: Option<i64>,
    reason: String,
    since: Option<i64>,
}

impl LockRow {
    /// The holder, if the lock is held and unexpired at `now`.
    fn live_holder(self, now: i64) -> Result<Option<LockHolder>> {
        let (Some(owner), Some(expires_at)) = (self.owner, self.expires_at) else {
            return Ok(None);
        };
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some(LockHolder {
            name: LockName::new(&self.name).map_err(corrupt)?,
            lease: Lease::granted(
                Owner::new(owner).map_err(corrupt)?,
                token(self.token)?,
                Timestamp::from_millis(expires_at),
            ),
            reason: self.reason,
            since: Timestamp::from_millis(self.since.unwrap_or(0)),
        }))
    }
}

fn corrupt(error: Error) -> Error {
    Error::Backend {
        message: format!("corrupt lock row: {error}"),
        transient: false,
        source: None,
    }
}

fn token(value: i64) -> Result<FencingToken> {
    u64::try_from(value)
        .map(FencingToken::new)
        .map_err(|_| corrupt(Error::invalid(format!("negative token {value}"))))
}

fn db_token(token: FencingToken) -> i64 {
    i64::try_from(token.get()).unwrap_or(i64::MAX)
}

impl SqliteBackend {
    /// The live holders of the requested names, read without taking the write lock, so that
    /// waiters polling a held lock do not queue behind every writer. A holder seen here held
    /// the lock when it was read, so answering `Busy` from it is truthful.
    async fn read_holders(&self, request: &LockRequest) -> Result<Vec<LockHolder>> {
        let mut holders = Vec::new();
        for name in request.names() {
            let row: Option<LockRow> = sqlx::query_as(self.sql().live_lock.clone())
                .bind(name.as_str().to_owned())
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            // The query kept the row only if it was live by the database's clock.
            if let Some(holder) = row
                .map(|row| row.live_holder(i64::MIN))
                .transpose()?
                .flatten()
            {
                holders.push(holder);
            }
        }
        Ok(holders)
    }

    async fn try_acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let seen = self.read_holders(request).await?;
        if !seen.is_empty() {
            return Ok(Acquire::Busy(seen));
        }
        let mut write = self.write().await?;
        let now = write.now;
        let mut blockers = Vec::new();
        let mut last_token = 0;
        for name in request.names() {
            sqlx::query(self.sql().insert_lock.clone())
                .bind(name.as_str().to_owned())
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            let row: LockRow = sqlx::query_as(self.sql().lock_by_name.clone())
                .bind(name.as_str().to_owned())
                .fetch_one(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            last_token = last_token.max(row.token);
            if let Some(holder) = row.live_holder(now)? {
                blockers.push(holder);
            }
        }
        if !blockers.is_empty() {
            // Nothing is taken; the rows inserted for new names are rolled back with it.
            write.rollback().await?;
            return Ok(Acquire::Busy(blockers));
        }
        let granted = last_token + 1;
        let expires_at = Timestamp::from_millis(now).saturating_add(request.ttl());
        for name in request.names() {
            sqlx::query(self.sql().grant_lock.clone())
                .bind(request.owner().as_str().to_owned())
                .bind(granted)
                .bind(expires_at.as_millis())
                .bind(request.reason().to_owned())
                .bind(now)
                .bind(name.as_str().to_owned())
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
        }
        write.commit().await?;
        Ok(Acquire::Granted(LockLease {
            names: request.names().to_vec(),
            lease: Lease::granted(request.owner().clone(), token(granted)?, expires_at),
            reason: request.reason().to_owned(),
        }))
    }
}

#[async_trait]
impl Lock for SqliteBackend {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let deadline = tokio::time::Instant::now() + request.wait();
        loop {
            let released = self.inner.lock_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = self.try_acquire(request).await?;
            if matches!(outcome, Acquire::Granted(_)) || tokio::time::Instant::now() >= deadline {
                return Ok(outcome);
            }
            let recheck = tokio::time::Instant::now() + LOCK_RECHECK;
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(recheck.min(deadline)) => {}
            }
        }
    }

    async fn renew_lock(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease> {
        validate_ttl(ttl)?;
        let mut write = self.write().await?;
        let expires_at = Timestamp::from_millis(write.now).saturating_add(ttl);
        for name in &lease.names {
            let renewed = sqlx::query(self.sql().renew_lock.clone())
                .bind(expires_at.as_millis())
                .bind(name.as_str().to_owned())
                .bind(lease.lease.owner().as_str().to_owned())
                .bind(db_token(lease.lease.token()))
                .bind(write.now)
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?
                .rows_affected();
            if renewed == 0 {
                write.rollback().await?;
                return Err(lease.lost());
            }
        }
        write.commit().await?;
        Ok(LockLease {
            names: lease.names.clone(),
            lease: Lease::granted(lease.lease.owner().clone(), lease.lease.token(), expires_at),
            reason: lease.reason.clone(),
        })
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        let mut write = self.write().await?;
        let now = write.now;
        let mut all_current = true;
        for name in &lease.names {
            let row: Option<LockRow> = sqlx::query_as(self.sql().lock_by_name.clone())
                .bind(name.as_str().to_owned())
                .fetch_optional(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
            all_current &= row.is_some_and(|row| {
                row.owner.as_deref() == Some(lease.lease.owner().as_str())
                    && row.token == db_token(lease.lease.token())
                    && row.expires_at.is_some_and(|expires_at| expires_at > now)
            });
            sqlx::query(self.sql().release_lock.clone())
                .bind(name.as_str().to_owned())
                .bind(lease.lease.owner().as_str().to_owned())
                .bind(db_token(lease.lease.token()))
                .execute(&mut *write.tx)
                .await
                .map_err(from_sqlx)?;
        }
        write.commit().await?;
        self.inner.lock_released.notify_waiters();
        if all_current {
            Ok(())
        } else {
            Err(lease.lost())
        }
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        let rows: Vec<LockRow> = sqlx::query_as(self.sql().lock_holders.clone())
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        // The query already kept the unexpired ones; `i64::MIN` keeps them all.
        let mut holders = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(holder) = row.live_holder(i64::MIN)? {
                holders.push(holder);
            }
        }
        Ok(holders)
    }
}
