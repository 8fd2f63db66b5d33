//! What Baton's SQL backends (`baton-sqlite`, `baton-postgres`, `baton-mysql`) share, so that
//! each of them holds only its own SQL: a validated [`TablePrefix`], the mapping of sqlx errors
//! to [`baton_core::Error`], the migration runner, the job row, the event poller that
//! carries notifications between processes where the database has no `LISTEN`, and two guards
//! against callers that drop a call mid-flight: [`begin`] and [`Detached`].
//!
//! Conventions every SQL backend follows, so that rows read the same everywhere:
//! times are `BIGINT` milliseconds since the Unix epoch read from the database's clock; JSON
//! (payloads, results, retry policies, attempt histories) is stored as text; job states are
//! stored by their names (`pending`, `running`, …).

mod begin;
mod detached;
mod error;
mod events;
mod migrate;
mod prefix;
mod row;

pub use begin::begin;
pub use detached::{Connect, Detached};
pub use error::{from_sqlx, is_transient};
pub use events::{EventPoller, EventRow, FetchEvents, POLL_MAX, POLL_MIN, wake_event};
pub use migrate::{MigrationFile, migrator};
pub use prefix::TablePrefix;
pub use row::{JobRow, encode_history, encode_json, encode_retry};
