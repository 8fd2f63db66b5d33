//! [`Lock`] on MySQL: one row per name ever locked; a request inserts its missing rows, locks
//! its rows in name order with `FOR UPDATE`, and takes them all or none in one transaction.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Acquire, Error, FencingToken, Lease, Lock, LockHolder, LockLease, LockName, LockRequest, Owner,
    Result, Timestamp, validate_ttl,
};
use baton_sql::from_sqlx;
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};

use crate::MysqlStore;
use crate::sql::{TxError, millis, now, retrying};

/// How often a waiter looks again when no release in this process told it to: a holder may
/// expire, or another process may release.
const RECHECK_INTERVAL: Duration = Duration::from_millis(50);

const INSERT_NAMES: &str = "INSERT IGNORE INTO {prefix}locks (name, reason) VALUES {rows}";
const NAME_ROW: &str = "(?, '')";
const LOCK_ROWS: &str = "SELECT name, owner, token, expires_at, reason, since FROM {prefix}locks \
     WHERE name IN ({in}) ORDER BY name FOR UPDATE";
const GRANT: &str = "UPDATE {prefix}locks SET owner = ?, token = ?, expires_at = ?, reason = ?, \
     since = ?, version = version + 1 WHERE name IN ({in})";
const RENEW: &str = "UPDATE {prefix}locks SET expires_at = ?, version = version + 1 \
     WHERE name IN ({in}) AND owner = ? AND token = ?";
const RELEASE: &str = "UPDATE {prefix}locks SET owner = NULL, expires_at = NULL, \
     version = version + 1 WHERE name IN ({in}) AND owner = ? AND token = ?";
const HOLDERS: &str = "SELECT name, owner, token, expires_at, reason, since FROM {prefix}locks \
     WHERE owner IS NOT NULL AND expires_at > {now} ORDER BY name";

/// A row of the locks table.
struct LockRow {
    name: String,
    owner: Option<String>,
    token: i64,
    expires_at: Option<i64>,
    reason: String,
    since: Option<i64>,
}

impl LockRow {
    fn read(row: &MySqlRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            name: row.try_get(0)?,
            owner: row.try_get(1)?,
            token: row.try_get(2)?,
            expires_at: row.try_get(3)?,
            reason: row.try_get(4)?,
            since: row.try_get(5)?,
        })
    }

    /// Whether the row is held by anyone at `now`.
    fn is_held(&self, now: i64) -> bool {
        self.owner.is_some() && self.expires_at.is_some_and(|expires| expires > now)
    }

    /// Whether `lease` is the row's grant (expired or not).
    fn is_granted_to(&self, lease: &Lease) -> bool {
        self.owner.as_deref() == Some(lease.owner().as_str())
            && u64::try_from(self.token).ok() == Some(lease.token().get())
    }

    fn holder(&self) -> Result<LockHolder> {
        let corrupt = |e: &dyn std::fmt::Display| Error::Backend {
            message: format!("lock {} has a corrupt row: {e}", self.name),
            transient: false,
            source: None,
        };
        Ok(LockHolder {
            name: LockName::new(&self.name).map_err(|e| corrupt(&e))?,
            lease: Lease::granted(
                Owner::new(self.owner.as_deref().unwrap_or_default()).map_err(|e| corrupt(&e))?,
                FencingToken::new(u64::try_from(self.token).map_err(|e| corrupt(&e))?),
                Timestamp::from_millis(self.expires_at.unwrap_or_default()),
            ),
            reason: self.reason.clone(),
            since: Timestamp::from_millis(self.since.unwrap_or_default()),
        })
    }
}

impl MysqlStore {
    async fn lock_rows(
        &self,
        conn: &mut MySqlConnection,
        names: &[LockName],
    ) -> Result<Vec<LockRow>, TxError> {
        let mut query = sqlx::query(self.stmt_in(LOCK_ROWS, names.len()));
        for name in names {
            query = query.bind(name.as_str());
        }
        let rows = query.fetch_all(&mut *conn).await?;
        Ok(rows
            .iter()
            .map(LockRow::read)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn try_acquire(&self, request: &LockRequest) -> Result<Acquire, TxError> {
        let names = request.names();
        let mut insert = sqlx::query(self.inner.statements.rows(
            INSERT_NAMES,
            NAME_ROW,
            names.len(),
        ));
        for name in names {
            insert = insert.bind(name.as_str());
        }
        insert.execute(&self.inner.pool).await?;
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let rows = self.lock_rows(&mut tx, names).await?;
        let busy: Vec<LockHolder> = rows
            .iter()
            .filter(|row| row.is_held(now))
            .map(LockRow::holder)
            .collect::<Result<_>>()?;
        if !busy.is_empty() {
            tx.rollback().await?;
            return Ok(Acquire::Busy(busy));
        }
        let token = 1 + rows.iter().map(|row| row.token).max().unwrap_or(0);
        let expires_at = now.saturating_add(millis(request.ttl()));
        let mut grant = sqlx::query(self.stmt_in(GRANT, names.len()))
            .bind(request.owner().as_str())
            .bind(token)
            .bind(expires_at)
            .bind(request.reason())
            .bind(now);
        for name in names {
            grant = grant.bind(name.as_str());
        }
        grant.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Acquire::Granted(LockLease {
            names: names.to_vec(),
            lease: Lease::granted(
                request.owner().clone(),
                FencingToken::new(u64::try_from(token).unwrap_or(0)),
                Timestamp::from_millis(expires_at),
            ),
            reason: request.reason().to_owned(),
        }))
    }

    async fn renew_once(&self, lease: &LockLease, ttl: Duration) -> Result<LockLease, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let rows = self.lock_rows(&mut tx, &lease.names).await?;
        let current = rows.len() == lease.names.len()
            && rows
                .iter()
                .all(|row| row.is_held(now) && row.is_granted_to(&lease.lease));
        if !current {
            tx.rollback().await?;
            return Err(lease.lost().into());
        }
        let expires_at = now.saturating_add(millis(ttl));
        let mut renew = sqlx::query(self.stmt_in(RENEW, lease.names.len())).bind(expires_at);
        for name in &lease.names {
            renew = renew.bind(name.as_str());
        }
        renew
            .bind(lease.lease.owner().as_str())
            .bind(i64::try_from(lease.lease.token().get()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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

    async fn release_once(&self, lease: &LockLease) -> Result<bool, TxError> {
        let mut tx = baton_sql::begin(&self.inner.pool, None).await?;
        let now = now(&mut tx).await?;
        let rows = self.lock_rows(&mut tx, &lease.names).await?;
        let all_current = rows.len() == lease.names.len()
            && rows
                .iter()
                .all(|row| row.is_held(now) && row.is_granted_to(&lease.lease));
        let mut release = sqlx::query(self.stmt_in(RELEASE, lease.names.len()));
        for name in &lease.names {
            release = release.bind(name.as_str());
        }
        release
            .bind(lease.lease.owner().as_str())
            .bind(i64::try_from(lease.lease.token().get()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(all_current)
    }
}

#[async_trait]
impl Lock for MysqlStore {
    async fn acquire(&self, request: &LockRequest) -> Result<Acquire> {
        let deadline = tokio::time::Instant::now() + request.wait();
        loop {
            let released = self.inner.lock_released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let outcome = retrying(|| self.try_acquire(request)).await?;
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
        retrying(|| self.renew_once(lease, ttl)).await
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<()> {
        let all_current = retrying(|| self.release_once(lease)).await?;
        self.inner.lock_released.notify_waiters();
        if all_current {
            Ok(())
        } else {
            Err(lease.lost())
        }
    }

    async fn holders(&self) -> Result<Vec<LockHolder>> {
        let rows = sqlx::query(self.stmt(HOLDERS))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        rows.iter()
            .map(|row| LockRow::read(row).map_err(from_sqlx)?.holder())
            .collect()
    }
}
