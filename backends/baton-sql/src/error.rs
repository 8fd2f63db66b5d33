//! sqlx errors as [`baton_core::Error`]: transient or not, never a backend type.

use baton_core::Error;

/// SQLSTATE and SQLite result codes that mean "try again": serialization failures and
/// deadlocks (PostgreSQL `40001`, `40P01`; MySQL reports its deadlock 1213 as `40001`), lock
/// wait timeouts (MySQL `HY000` is too broad, so 1205 is matched by message), the server
/// shutting down or starting (`57P01`, `57P02`, `57P03`), too many connections (`53300`,
/// `08004`), and SQLite's `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6) with their extended codes.
const TRANSIENT_CODES: &[&str] = &[
    "40001", "40P01", "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006", "08004", "5",
    "6", "261", "262", "517", "773",
];

/// Whether `error` may go away if the same call is made again.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            db.code()
                .is_some_and(|code| TRANSIENT_CODES.contains(&&*code))
                || db.message().contains("Lock wait timeout")
        }
        _ => false,
    }
}

/// `error` as a [`baton_core::Error::Backend`], transient when [`is_transient`] says so.
pub fn from_sqlx(error: sqlx::Error) -> Error {
    if is_transient(&error) {
        Error::transient(error)
    } else {
        Error::permanent(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_transient_and_decoding_failures_are_not() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(from_sqlx(io).is_retryable());
        assert!(from_sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!from_sqlx(sqlx::Error::RowNotFound).is_retryable());
        assert!(!from_sqlx(sqlx::Error::ColumnNotFound("x".into())).is_retryable());
    }
}
