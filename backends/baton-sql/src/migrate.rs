//! Migrations with the table prefix applied, tracked in a prefixed table of their own.

use std::borrow::Cow;

use baton_core::Result;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use crate::TablePrefix;

/// One migration file, embedded with `include_str!`: its version (the number its file name
/// starts with), a description, and SQL naming tables as `{prefix}jobs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationFile {
    /// Applied in increasing order; never reuse or change a released one.
    pub version: i64,
    /// What it does, in words.
    pub description: &'static str,
    /// The SQL, with `{prefix}` where table names begin.
    pub sql: &'static str,
}

/// A sqlx [`Migrator`] for `files` with `prefix` applied, recording what it applied in
/// `<prefix>migrations`, so that several Baton instances with different prefixes can share one
/// database. A file already applied is skipped, so running it on every connect is safe.
///
/// Processes that start together must not apply a file twice: sqlx's lock serializes them on
/// PostgreSQL, but not on MariaDB (whose `GET_LOCK(…, -1)` returns at once) nor on SQLite (no
/// lock at all), so those backends hold a lock of their own (`GET_LOCK` with a timeout, a retry
/// after a lost race) around the run.
///
/// # Errors
///
/// None today; the `Result` leaves room for checks on the files.
pub fn migrator(prefix: &TablePrefix, files: &[MigrationFile]) -> Result<Migrator> {
    let migrations = files
        .iter()
        .map(|file| {
            Migration::new(
                file.version,
                Cow::Borrowed(file.description),
                MigrationType::Simple,
                AssertSqlSafe(prefix.apply(file.sql)).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(prefix.table("migrations"));
    Ok(migrator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_reaches_the_sql_and_the_tracking_table() {
        let prefix = TablePrefix::new("app_").unwrap();
        let files = [MigrationFile {
            version: 1,
            description: "jobs",
            sql: "CREATE TABLE {prefix}jobs (id BIGINT)",
        }];
        let migrator = migrator(&prefix, &files).unwrap();
        let migration = migrator.iter().next().unwrap();
        assert_eq!(migration.sql.as_str(), "CREATE TABLE app_jobs (id BIGINT)");
        assert_eq!(migrator.table_name, "app_migrations");
    }
}
