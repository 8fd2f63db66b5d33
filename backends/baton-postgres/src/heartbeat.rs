//! [`Heartbeat`] on PostgreSQL: one row per owner with its expiry and last beat time by the
//! server's clock.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Beat, Error, Heartbeat, Owner, Result, Timestamp, validate_ttl};
use baton_sql::from_sqlx;
use sqlx::Row;

use crate::{PostgresBackend, millis};

#[async_trait]
impl Heartbeat for PostgresBackend {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        sqlx::query(self.inner.shared.sql.beat.clone())
            .bind(owner.as_str())
            .bind(millis(ttl))
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        let row = sqlx::query(self.inner.shared.sql.alive.clone())
            .bind(owner.as_str())
            .fetch_one(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        row.try_get("alive").map_err(from_sqlx)
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let rows = sqlx::query(self.inner.shared.sql.dead_owners.clone())
            .fetch_all(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        let mut dead = rows
            .iter()
            .map(|row| {
                let owner: String = row.try_get("owner").map_err(from_sqlx)?;
                Owner::new(owner).map_err(|e| Error::Backend {
                    message: format!("corrupt heartbeat row: {e}"),
                    transient: false,
                    source: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        dead.sort();
        Ok(dead)
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let row = sqlx::query(self.inner.shared.sql.last_beat.clone())
            .bind(owner.as_str())
            .fetch_optional(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        row.map(|row| {
            Ok(Beat {
                at: row
                    .try_get::<Option<i64>, _>("beat_at")
                    .map_err(from_sqlx)?
                    .map(Timestamp::from_millis),
                expires_at: Timestamp::from_millis(row.try_get("expires_at").map_err(from_sqlx)?),
                alive: row.try_get("alive").map_err(from_sqlx)?,
            })
        })
        .transpose()
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        sqlx::query(self.inner.shared.sql.forget.clone())
            .bind(owner.as_str())
            .execute(&self.inner.shared.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }
}
