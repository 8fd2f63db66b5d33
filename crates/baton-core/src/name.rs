//! Validated names: every queue, lock, pool, item and owner name passes through one check.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The longest name Baton accepts, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a name of the given kind: not empty, at most [`MAX_NAME_LEN`] bytes, no control
/// characters, and no leading or trailing white space.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the kind and what is wrong.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{kind} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{kind} name is {} bytes long, more than the {MAX_NAME_LEN} allowed",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{kind} name contains the control character {c:?}"
        )));
    }
    if name.trim() != name {
        return Err(Error::invalid(format!(
            "{kind} name {name:?} starts or ends with white space"
        )));
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $type:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $type(Arc<str>);

        impl $type {
            #[doc = concat!("A ", $kind, " name, checked by [`validate_name`].")]
            ///
            /// # Errors
            ///
            /// [`Error::InvalidInput`] if the name is empty, too long, or holds control characters.
            pub fn new(name: impl AsRef<str>) -> Result<Self> {
                let name = name.as_ref();
                validate_name($kind, name)?;
                Ok(Self(Arc::from(name)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $type {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $type {
            type Error = Error;

            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $type {
            type Error = Error;

            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// The name of a job queue, such as `default` or `emails`.
    QueueName,
    "queue"
);
validated_name!(
    /// The name of a lock, such as `app:42`, `tasktype:backup` or `update`.
    LockName,
    "lock"
);
validated_name!(
    /// The name of a claim pool, such as `accounts`.
    PoolName,
    "pool"
);
validated_name!(
    /// The id of an item in a claim pool, such as an account id.
    ItemId,
    "item"
);
validated_name!(
    /// The identity of a process or worker that holds leases, such as `host-1234`.
    Owner,
    "owner"
);

impl Owner {
    /// This process's identity: `<hostname>-<pid>`, as the seed systems name their workers.
    pub fn local() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && validate_name("owner", h).is_ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let name = format!("{host}-{}", std::process::id());
        Self::new(&name).unwrap_or_else(|_| Self(Arc::from(format!("pid-{}", std::process::id()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "default",
            "app:42",
            "tasktype:backup",
            "host-1234",
            "é-ünïcode",
        ] {
            QueueName::new(name).unwrap();
        }
    }

    #[test]
    fn rejects_empty_long_and_control_character_names() {
        assert!(matches!(QueueName::new(""), Err(Error::InvalidInput(_))));
        assert!(matches!(
            LockName::new("a".repeat(201)),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(PoolName::new("a\nb"), Err(Error::InvalidInput(_))));
        assert!(matches!(ItemId::new("a\0b"), Err(Error::InvalidInput(_))));
        assert!(matches!(Owner::new(" padded"), Err(Error::InvalidInput(_))));
        LockName::new("a".repeat(200)).unwrap();
    }

    #[test]
    fn error_names_the_kind() {
        let err = LockName::new("").unwrap_err();
        assert_eq!(err.to_string(), "invalid input: lock name is empty");
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<QueueName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<QueueName>("\"\"").is_err());
    }

    #[test]
    fn local_owner_is_a_valid_name() {
        let owner = Owner::local();
        assert!(owner.as_str().ends_with(&std::process::id().to_string()));
    }
}
