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
/// database. Run it with `migrator.run(&pool)`: sqlx takes the database's migration lock where
/// it has one (PostgreSQL, MySQL), so processes starting together apply each file once, and
/// a file already applied is skipped, so running it on every connect is safe.
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
