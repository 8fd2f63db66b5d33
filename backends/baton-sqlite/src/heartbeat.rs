//! [`Heartbeat`] on SQLite: one row per owner holding its expiry and last beat time, written
//! in one statement.

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{Beat, Error, Heartbeat, Owner, Result, Timestamp, validate_ttl};
use baton_sql::from_sqlx;

use crate::{SqliteBackend, millis};

#[async_trait]
impl Heartbeat for SqliteBackend {
    async fn beat(&self, owner: &Owner, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        sqlx::query(self.sql().beat.clone())
            .bind(owner.as_str().to_owned())
            .bind(millis(ttl))
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn alive(&self, owner: &Owner) -> Result<bool> {
        sqlx::query_scalar(self.sql().alive.clone())
            .bind(owner.as_str().to_owned())
            .fetch_one(self.pool())
            .await
            .map_err(from_sqlx)
    }

    async fn dead_owners(&self) -> Result<Vec<Owner>> {
        let owners: Vec<String> = sqlx::query_scalar(self.sql().dead_owners.clone())
            .fetch_all(self.pool())
            .await
            .map_err(from_sqlx)?;
        owners
            .into_iter()
            .map(|owner| {
                Owner::new(owner).map_err(|error| Error::Backend {
                    message: format!("corrupt heartbeat row: {error}"),
                    transient: false,
                    source: None,
                })
            })
            .collect()
    }

    async fn last_beat(&self, owner: &Owner) -> Result<Option<Beat>> {
        let row: Option<(Option<i64>, i64, bool)> = sqlx::query_as(self.sql().last_beat.clone())
            .bind(owner.as_str().to_owned())
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?;
        Ok(row.map(|(at, expires_at, alive)| Beat {
            at: at.map(Timestamp::from_millis),
            expires_at: Timestamp::from_millis(expires_at),
            alive,
        }))
    }

    async fn forget(&self, owner: &Owner) -> Result<()> {
        sqlx::query(self.sql().forget.clone())
            .bind(owner.as_str().to_owned())
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }
}
