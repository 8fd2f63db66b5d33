//! Beginning a transaction in a way a dropped caller cannot break.
//!
//! sqlx counts a transaction as begun only once the server has answered `BEGIN`. A caller
//! dropped while that answer is on its way (a timeout, a `select!`, a stopping task) leaves the
//! connection inside a transaction sqlx does not know of; the pool takes it back as it is, and
//! every later statement on it runs in that transaction, never committed, invisible to other
//! connections and holding its row locks. [`begin`] runs `BEGIN` in a task of its own, so it
//! always completes: a transaction nobody waits for any more is rolled back as sqlx rolls back
//! any dropped transaction.

use baton_core::{Error, Result};
use sqlx::{Database, Pool, Transaction};

use crate::from_sqlx;

/// Begins a transaction on a connection from `pool`, with `statement` instead of the plain
/// `BEGIN` when given.
///
/// # Errors
///
/// `Backend` if no connection could be had or the server refused to begin.
pub async fn begin<DB: Database>(
    pool: &Pool<DB>,
    statement: Option<&'static str>,
) -> Result<Transaction<'static, DB>> {
    let pool = pool.clone();
    tokio::spawn(async move {
        match statement {
            Some(statement) => pool.begin_with(statement).await,
            None => pool.begin().await,
        }
    })
    .await
    .map_err(Error::transient)?
    .map_err(from_sqlx)
}
