//! Backends by URL: the one place that names concrete backends and turns configuration into an
//! `Arc<dyn Backend>` for everything else.

use std::fmt;
use std::sync::Arc;

use anyhow::{Context, bail};
use baton_core::Backend;
use baton_memory::MemoryBackend;
use baton_mysql::{MysqlBackend, MysqlConfig};
use baton_postgres::{PostgresBackend, PostgresConfig};
use baton_redis::{KeyPrefix, RedisBackend, RedisConfig};
use baton_sql::TablePrefix;
use baton_sqlite::{SqliteBackend, SqliteConfig};

/// The URL schemes `backend` accepts, for error messages and help.
pub const ACCEPTED_SCHEMES: &str = "memory://, sqlite://, postgres://, mysql://, redis://";

/// The kinds of backend a URL can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// `memory://`: in-process, lost on exit.
    Memory,
    /// `sqlite://path` or `sqlite:path`.
    Sqlite,
    /// `postgres://…` or `postgresql://…`.
    Postgres,
    /// `mysql://…` or `mariadb://…`.
    Mysql,
    /// `redis://…` or `rediss://…`.
    Redis,
}

impl BackendKind {
    /// The kind of backend `url` names, judged by its scheme alone.
    ///
    /// # Errors
    ///
    /// An error naming the URL (its password hidden) and the accepted schemes.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let Some((scheme, _)) = url.split_once(':') else {
            bail!(
                "backend url {:?} has no scheme: expected one of {ACCEPTED_SCHEMES}",
                redact(url)
            );
        };
        Ok(match scheme.to_ascii_lowercase().as_str() {
            "memory" => Self::Memory,
            "sqlite" => Self::Sqlite,
            "postgres" | "postgresql" => Self::Postgres,
            "mysql" | "mariadb" => Self::Mysql,
            "redis" | "rediss" => Self::Redis,
            _ => bail!(
                "unknown backend url {:?}: expected one of {ACCEPTED_SCHEMES}",
                redact(url)
            ),
        })
    }

    /// The backend's short name, such as `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens the backend `url` names, its tables (or keys) named with `table_prefix`.
///
/// # Errors
///
/// An unknown scheme, an invalid prefix, a backend not built into this binary, or a backend that
/// cannot be reached.
pub async fn connect(url: &str, table_prefix: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let prefix = TablePrefix::new(table_prefix)?;
    match BackendKind::from_url(url)? {
        BackendKind::Memory => {
            let rest = url.split_once(':').map_or("", |(_, rest)| rest);
            if !matches!(rest, "" | "//") {
                bail!(
                    "backend url {:?}: the memory backend takes no address; use memory://",
                    redact(url)
                );
            }
            Ok(Arc::new(MemoryBackend::new()))
        }
        BackendKind::Sqlite => {
            let config = SqliteConfig {
                prefix,
                ..SqliteConfig::new(url)
            };
            let backend = SqliteBackend::connect(config)
                .await
                .with_context(|| format!("cannot open the sqlite backend {:?}", redact(url)))?;
            Ok(Arc::new(backend))
        }
        BackendKind::Postgres => {
            let config = PostgresConfig {
                prefix,
                ..PostgresConfig::new(url)
            };
            let backend = PostgresBackend::connect(config)
                .await
                .with_context(|| format!("cannot open the postgres backend {:?}", redact(url)))?;
            Ok(Arc::new(backend))
        }
        BackendKind::Mysql => {
            let config = MysqlConfig {
                prefix,
                ..MysqlConfig::new(mysql_url(url))
            };
            let backend = MysqlBackend::connect(config)
                .await
                .with_context(|| format!("cannot open the mysql backend {:?}", redact(url)))?;
            Ok(Arc::new(backend))
        }
        BackendKind::Redis => {
            if url.to_ascii_lowercase().starts_with("rediss:") {
                bail!(
                    "backend url {:?}: TLS (rediss://) is not supported by this build; use \
                     redis:// through a TLS tunnel",
                    redact(url)
                );
            }
            let config = RedisConfig {
                prefix: KeyPrefix::new(table_prefix)?,
                ..RedisConfig::new(url)
            };
            let backend = RedisBackend::connect(config)
                .await
                .with_context(|| format!("cannot open the redis backend {:?}", redact(url)))?;
            Ok(Arc::new(backend))
        }
    }
}

/// `url` with a `mariadb://` scheme spelled `mysql://`, the scheme the driver knows.
fn mysql_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => url.to_owned(),
    }
}

/// `url` with any password replaced by `***`, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_their_backend_kind() {
        let cases = [
            ("memory://", BackendKind::Memory),
            ("sqlite://baton.db", BackendKind::Sqlite),
            ("sqlite:baton.db", BackendKind::Sqlite),
            ("postgresql://u@h/db", BackendKind::Postgres),
            ("MYSQL://h/db", BackendKind::Mysql),
            ("rediss://h:6380", BackendKind::Redis),
        ];
        for (url, kind) in cases {
            assert_eq!(BackendKind::from_url(url).unwrap(), kind, "{url}");
        }
    }

    #[test]
    fn unknown_schemes_are_refused_naming_the_url_and_the_accepted_ones() {
        let err = BackendKind::from_url("mongodb://h")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mongodb://h") && err.contains(ACCEPTED_SCHEMES),
            "{err}"
        );
        let err = BackendKind::from_url("baton.db").unwrap_err().to_string();
        assert!(err.contains("has no scheme"), "{err}");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/baton?sslmode=require"),
            "postgres://app:***@db:5432/baton?sslmode=require"
        );
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h/0"), "redis://h/0");
        let err = BackendKind::from_url("nope://u:pw@h")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
    }
}
