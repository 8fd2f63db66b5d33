//! The one error type every Baton trait returns.

use std::fmt;

/// A `Result` whose error defaults to Baton's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a Baton operation, as variants a caller can act on.
///
/// Backend-specific errors (a dropped connection, a SQL error) are wrapped in
/// [`Error::Backend`] so that subsystems never see a backend's own error types.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller presented a lease (a fencing token) that is no longer current: it expired,
    /// was revoked (a canceled job), or a newer lease was granted to someone else.
    #[error("lease lost on {resource}")]
    LeaseLost {
        /// What the lease was for, such as `job 42` or `lock app:7`.
        resource: String,
    },
    /// The named thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, such as `job 42`.
        what: String,
    },
    /// The operation conflicts with the current state, such as canceling a job that succeeded.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input was refused before anything was changed: a bad name, an oversized payload,
    /// a zero TTL.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend failed. Nothing can be assumed about whether the operation took effect.
    #[error("backend error: {message}")]
    Backend {
        /// What failed, in words.
        message: String,
        /// Whether trying again may succeed (a lost connection, a timeout, a busy database).
        transient: bool,
        /// The backend's own error, if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// A [`Error::LeaseLost`] for `resource`.
    pub fn lease_lost(resource: impl fmt::Display) -> Self {
        Self::LeaseLost {
            resource: resource.to_string(),
        }
    }

    /// A [`Error::NotFound`] for `what`.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::NotFound {
            what: what.to_string(),
        }
    }

    /// An [`Error::InvalidInput`] with `message`.
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::InvalidInput(message.to_string())
    }

    /// An [`Error::Conflict`] with `message`.
    pub fn conflict(message: impl fmt::Display) -> Self {
        Self::Conflict(message.to_string())
    }

    /// A transient [`Error::Backend`] wrapping `source`: worth trying again.
    pub fn transient(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend {
            message: source.to_string(),
            transient: true,
            source: Some(Box::new(source)),
        }
    }

    /// A permanent [`Error::Backend`] wrapping `source`: trying again will not help.
    pub fn permanent(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend {
            message: source.to_string(),
            transient: false,
            source: Some(Box::new(source)),
        }
    }

    /// Whether the same call may succeed if it is made again unchanged.
    ///
    /// Only transient backend failures qualify; a lost lease, a missing item, a conflict or
    /// invalid input will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Backend {
                transient: true,
                ..
            }
        )
    }

    /// Whether this is [`Error::LeaseLost`].
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_backend_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(Error::transient(io).is_retryable());
        let io = std::io::Error::other("corrupt");
        assert!(!Error::permanent(io).is_retryable());
        assert!(!Error::lease_lost("job 1").is_retryable());
        assert!(!Error::invalid("bad").is_retryable());
    }

    #[test]
    fn messages_are_lowercase_and_name_the_resource() {
        assert_eq!(
            Error::lease_lost("job 7").to_string(),
            "lease lost on job 7"
        );
        assert_eq!(Error::not_found("job 7").to_string(), "job 7 not found");
    }
}
