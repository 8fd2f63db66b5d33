//! SQL text with the prefix applied once, the server's clock, and the retry of transactions
//! that lost a deadlock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use baton_core::{Error, Result};
use baton_sql::{TablePrefix, from_sqlx};
use sqlx::mysql::MySqlDatabaseError;
use sqlx::{AssertSqlSafe, MySqlConnection, Row, SqlSafeStr, SqlStr};

/// The server's time in milliseconds since the epoch (the session time zone is UTC).
pub(crate) const NOW: &str = "CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)";

/// The highest event sequence number, 0 for none.
pub(crate) const MAX_EVENT_SEQ: &str =
    "SELECT CAST(COALESCE(MAX(seq), 0) AS SIGNED) FROM {prefix}events";

/// How often a transaction that lost a deadlock or a lock wait is tried again before the
/// error reaches the caller.
const CONFLICT_RETRIES: u32 = 5;

/// The longest IN list or row list whose text is kept; longer ones are built per call.
const CACHED_LIST_LEN: usize = 64;

/// Statement texts with `{prefix}`, `{now}` and `{in}` replaced, built once and kept.
pub(crate) struct Statements {
    prefix: TablePrefix,
    cache: Mutex<HashMap<(&'static str, usize), SqlStr>>,
}

impl Statements {
    pub(crate) fn new(prefix: TablePrefix) -> Self {
        Self {
            prefix,
            cache: Mutex::default(),
        }
    }

    /// `text` ready to run.
    pub(crate) fn get(&self, text: &'static str) -> SqlStr {
        self.get_in(text, 0)
    }

    /// `text` with `{in}` replaced by `n` placeholders.
    pub(crate) fn get_in(&self, text: &'static str, n: usize) -> SqlStr {
        let key = (text, n);
        if let Some(sql) = self.lock().get(&key) {
            return sql.clone();
        }
        let sql = AssertSqlSafe(self.build(text, n)).into_sql_str();
        if n <= CACHED_LIST_LEN {
            self.lock().insert(key, sql.clone());
        }
        sql
    }

    /// `text` with `{rows}` replaced by `n` copies of `row`, separated by commas.
    pub(crate) fn rows(&self, text: &'static str, row: &'static str, n: usize) -> SqlStr {
        let rows = vec![row; n.max(1)].join(", ");
        AssertSqlSafe(self.build(text, 0).replace("{rows}", &self.build(&rows, 0))).into_sql_str()
    }

    fn build(&self, text: &str, n: usize) -> String {
        let placeholders = vec!["?"; n.max(1)].join(", ");
        self.prefix
            .apply(text)
            .replace("{now}", NOW)
            .replace("{in}", &placeholders)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, usize), SqlStr>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The server's time, in milliseconds.
pub(crate) async fn now(conn: &mut MySqlConnection) -> Result<i64, TxError> {
    let row = sqlx::query(SELECT_NOW).fetch_one(conn).await?;
    Ok(row.try_get(0)?)
}

/// [`NOW`] as a statement of its own, for transactions that use one time throughout.
const SELECT_NOW: &str = "SELECT CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)";

/// What a transaction attempt can fail with: a database error (retried when it is a deadlock
/// or a lock wait timeout) or a Baton error (returned as it is).
#[derive(Debug)]
pub(crate) enum TxError {
    Sql(sqlx::Error),
    Baton(Error),
}

impl From<sqlx::Error> for TxError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<Error> for TxError {
    fn from(error: Error) -> Self {
        Self::Baton(error)
    }
}

/// Runs `attempt` (one whole transaction) again when it lost a deadlock or a lock wait, a few
/// times, then returns the error as a transient `Backend` error.
pub(crate) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Baton(error)) => return Err(error),
            Err(TxError::Sql(error)) => {
                if tries < CONFLICT_RETRIES && is_conflict(&error) {
                    tries += 1;
                    let pause = Duration::from_millis(fastrand::u64(1..=10 * u64::from(tries)));
                    tokio::time::sleep(pause).await;
                    continue;
                }
                return Err(from_sqlx(error));
            }
        }
    }
}

/// Whether InnoDB rolled the transaction back to break a deadlock (1213) or gave up waiting
/// for a row lock (1205).
fn is_conflict(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let number = db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(MySqlDatabaseError::number);
            matches!(number, Some(1213 | 1205)) || db.code().as_deref() == Some("40001")
        }
        _ => false,
    }
}

/// `duration` in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    baton_core::duration_millis(duration)
}
