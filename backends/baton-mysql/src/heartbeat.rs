//! [`Heartbeat`] on MySQL: one row per owner with its expiry and last beat time by the
//! server's clock.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Beat, Heartbeat, Owner, Result, Timestamp, validate_ttl};
use baton_sql::from_sqlx;
use sqlx::Row;

use crate::MysqlStore;
use crate::sql::millis;

const BEAT: &str = "INSERT INTO {prefix}heartbeats (owner, expires_at, beat_at) \
     VALUES (?, {now} + ?, {now}) \
     ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at), beat_at = VALUES(beat_at)";
const ALIVE: &str =
    "SELECT COUNT(*) FROM {prefix}heartbeats WHERE owner = ? AND expires_at > {now}";
const LAST_BEAT: &str = "SELECT beat_at, expires_at, expires_at > {now} FROM {prefix}heartbeats \
     WHERE owner = ?";
const DEAD: &str = "SELECT owner FROM {prefix}heartbeats WHERE expires_at <= {now} ORDER BY owner";
const FORGET: &str = "DELETE FROM {prefix}heartbeats WHERE owner = ?";

#[async_trait]
impl Heartbeat for MysqlStore {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        sqlx::query(self.stmt(BEAT))
            .bind(owner.as_str())
            .bind(millis(ttl))
            .execute(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        let count: i64 = sqlx::query(self.stmt(ALIVE))
            .bind(owner.as_str())
            .fetch_one(&self.inner.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(from_sqlx)?;
        Ok(count > 0)
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let rows = sqlx::query(self.stmt(DEAD))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        rows.iter()
            .map(|row| Owner::new(row.try_get::<String, _>(0).map_err(from_sqlx)?))
            .collect()
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let row = sqlx::query(self.stmt(LAST_BEAT))
            .bind(owner.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        row.map(|row| {
            let at: Option<i64> = row.try_get(0).map_err(from_sqlx)?;
            let expires_at: i64 = row.try_get(1).map_err(from_sqlx)?;
            let alive: i64 = row.try_get(2).map_err(from_sqlx)?;
            Ok(Beat {
                at: at.map(Timestamp::from_millis),
                expires_at: Timestamp::from_millis(expires_at),
                alive: alive != 0,
            })
        })
        .transpose()
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        sqlx::query(self.stmt(FORGET))
            .bind(owner.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }
}
