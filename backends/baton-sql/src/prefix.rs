//! The table prefix: the one piece of SQL text that comes from configuration.

use std::fmt;

use baton_core::{Error, Result};

/// A prefix for every table a backend creates, so Baton can live inside an application's
/// database: `baton_` gives `baton_jobs`, `baton_locks`, ….
///
/// Table names cannot be bound parameters, so the prefix is the only configured text that is
/// ever spliced into SQL; it is therefore held to `[a-z][a-z0-9_]*`, at most 32 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TablePrefix(String);

impl TablePrefix {
    /// The longest prefix accepted, in bytes.
    pub const MAX_LEN: usize = 32;

    /// A checked prefix.
    ///
    /// # Errors
    ///
    /// `InvalidInput` unless the prefix is a lowercase ASCII letter followed by lowercase ASCII
    /// letters, digits and underscores, at most [`TablePrefix::MAX_LEN`] bytes.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let mut chars = prefix.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_allowed = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_allowed || prefix.len() > Self::MAX_LEN {
            return Err(Error::invalid(format!(
                "table prefix {prefix:?} must be a lowercase letter followed by lowercase letters, \
                 digits and underscores, at most {} bytes",
                Self::MAX_LEN
            )));
        }
        Ok(Self(prefix))
    }

    /// The full name of table `name`: the prefix followed by the name.
    pub fn table(&self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    /// `sql` with every `{prefix}` replaced by the prefix: how migrations and queries name
    /// their tables.
    pub fn apply(&self, sql: &str) -> String {
        sql.replace("{prefix}", &self.0)
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TablePrefix {
    /// `baton_`.
    fn default() -> Self {
        Self("baton_".to_owned())
    }
}

impl fmt::Debug for TablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_accepted() {
        for good in ["baton_", "b", "app_baton_2_"] {
            TablePrefix::new(good).unwrap();
        }
        for bad in [
            "",
            "_x",
            "1x",
            "Baton_",
            "x-y",
            "x;drop table jobs;--",
            "x y",
            &"x".repeat(33),
        ] {
            assert!(TablePrefix::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_names_tables() {
        let prefix = TablePrefix::new("app_").unwrap();
        assert_eq!(prefix.table("jobs"), "app_jobs");
        assert_eq!(
            prefix.apply("SELECT * FROM {prefix}jobs"),
            "SELECT * FROM app_jobs"
        );
    }
}
