//! Key and channel names: the one place that spells them, matching `named` in `lua/common.lua`.

use std::fmt;

use baton_core::{Error, Owner, PoolName, QueueName, Result};

/// The longest key prefix accepted, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// The prefix of every key and channel of a backend, such as `baton:`.
///
/// Printable ASCII without spaces or braces (a brace would change the keys' hash tag), at most
/// [`MAX_PREFIX_LEN`] bytes; it may be empty.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// A prefix, checked.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a prefix that is too long or holds spaces, braces or characters
    /// outside printable ASCII.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(Error::invalid(format!(
                "key prefix is {} bytes, more than the {MAX_PREFIX_LEN} allowed",
                prefix.len()
            )));
        }
        if let Some(c) = prefix
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '{' | '}'))
        {
            return Err(Error::invalid(format!(
                "key prefix {prefix:?} holds {c:?}: use printable ASCII without spaces or braces"
            )));
        }
        Ok(Self(prefix))
    }

    /// The prefix as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyPrefix {
    /// `baton:`.
    fn default() -> Self {
        Self("baton:".to_owned())
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for KeyPrefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Every key base and channel of one backend.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: KeyPrefix,
    /// The job area's base, `{<prefix>jobs}:`.
    pub(crate) jobs: String,
    /// The lock area's base, `{<prefix>locks}:`.
    pub(crate) locks: String,
    /// The heartbeat and claim area's base, `{<prefix>owners}:`.
    pub(crate) owners: String,
    /// The channel of job events.
    pub(crate) events_channel: String,
    /// The channel of queue wake-ups.
    pub(crate) wake_channel: String,
    /// The channel of lock releases.
    pub(crate) unlock_channel: String,
}

impl Keys {
    pub(crate) fn new(prefix: &KeyPrefix) -> Self {
        let p = prefix.as_str();
        Self {
            prefix: prefix.clone(),
            jobs: format!("{{{p}jobs}}:"),
            locks: format!("{{{p}locks}}:"),
            owners: format!("{{{p}owners}}:"),
            events_channel: format!("{p}events"),
            wake_channel: format!("{p}wake"),
            unlock_channel: format!("{p}unlock"),
        }
    }

    pub(crate) fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The job id counter: the key every job script declares.
    pub(crate) fn job_seq(&self) -> String {
        format!("{}seq", self.jobs)
    }

    /// The set of paused queues' names (in the job area, so that `reserve.lua` reads it).
    pub(crate) fn paused(&self) -> String {
        format!("{}paused", self.jobs)
    }

    /// The sorted set of every queue's name that was ever enqueued to, all scored 0 so ordered
    /// by name (bytewise); `enqueue.lua` adds to it.
    pub(crate) fn queues(&self) -> String {
        format!("{}queues", self.jobs)
    }

    /// The counts hash of a queue.
    pub(crate) fn queue_counts(&self, queue: &QueueName) -> String {
        format!("{}:counts", named(&self.jobs, "q", queue.as_str()))
    }

    /// The held-names set: the key every lock script declares.
    pub(crate) fn lock_held(&self) -> String {
        format!("{}held", self.locks)
    }

    /// The heartbeat expiry set.
    pub(crate) fn beats(&self) -> String {
        format!("{}beats", self.owners)
    }

    /// The beat-times hash: owner → when its last beat arrived.
    pub(crate) fn beat_times(&self) -> String {
        format!("{}beat_at", self.owners)
    }

    /// An owner's heartbeat key, set with `PX`.
    pub(crate) fn heartbeat(&self, owner: &Owner) -> String {
        named(&self.owners, "hb", owner.as_str())
    }

    /// A pool's key base (without the trailing `:`), as scripts receive it.
    pub(crate) fn pool(&self, pool: &PoolName) -> String {
        named(&self.owners, "pool", pool.as_str())
    }

    /// A pool's free set: the key every claim script declares.
    pub(crate) fn pool_free(&self, pool: &PoolName) -> String {
        format!("{}:free", self.pool(pool))
    }
}

/// `base` + `kind` + `:<byte length>:` + `name`, as `named` in `lua/common.lua`.
fn named(base: &str, kind: &str, name: &str) -> String {
    format!("{base}{kind}:{}:{name}", name.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_area_carries_its_hash_tag() {
        let keys = Keys::new(&KeyPrefix::default());
        let queue = QueueName::new("a:b}{c").unwrap();
        assert_eq!(keys.job_seq(), "{baton:jobs}:seq");
        assert_eq!(keys.queues(), "{baton:jobs}:queues");
        assert_eq!(keys.queue_counts(&queue), "{baton:jobs}:q:6:a:b}{c:counts");
        assert_eq!(keys.lock_held(), "{baton:locks}:held");
        let pool = PoolName::new("p").unwrap();
        assert_eq!(keys.pool_free(&pool), "{baton:owners}:pool:1:p:free");
    }

    #[test]
    fn names_of_different_lengths_never_share_a_key() {
        let keys = Keys::new(&KeyPrefix::default());
        let a = keys.heartbeat(&Owner::new("a:1:b").unwrap());
        let b = keys.heartbeat(&Owner::new("a").unwrap());
        assert_ne!(a, b);
        assert!(!a.starts_with(&b));
    }

    #[test]
    fn prefixes_with_braces_spaces_or_control_characters_are_refused() {
        for bad in ["a{b", "a}", "a b", "a\n", "é", &"x".repeat(65)] {
            assert!(
                matches!(KeyPrefix::new(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        KeyPrefix::new("").unwrap();
        KeyPrefix::new("baton_t1:").unwrap();
    }
}
