//! What a master executor is told: its name, its timings, and the checks that keep them sane.

use std::fmt;
use std::time::Duration;

use baton_core::{LockName, MAX_NAME_LEN, Owner, validate_name};
use serde::{Deserialize, Serialize};

use crate::control::{DISABLED_PREFIX, LEADER_PREFIX};

/// The name of a master (the seed's `lockName`), such as `JOB-SCHEDULER`.
///
/// Every master is one lease in the backend's lock namespace, under a prefix of its own so that
/// it never collides with a task lock of the same name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MasterName(String);

/// The longest master name, in bytes: room is left for the prefixes of its locks.
pub const MAX_MASTER_NAME_LEN: usize = MAX_NAME_LEN - DISABLED_PREFIX.len();

impl MasterName {
    /// A master name: not empty, at most [`MAX_MASTER_NAME_LEN`] bytes, no control characters,
    /// no leading or trailing white space.
    ///
    /// # Errors
    ///
    /// [`baton_core::Error::InvalidInput`] naming what is wrong.
    pub fn new(name: impl AsRef<str>) -> baton_core::Result<Self> {
        let name = name.as_ref();
        validate_name("master", name)?;
        if name.len() > MAX_MASTER_NAME_LEN {
            return Err(baton_core::Error::invalid(format!(
                "master name is {} bytes long, more than the {MAX_MASTER_NAME_LEN} allowed",
                name.len()
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lock whose holder is the master.
    pub fn leader_lock(&self) -> LockName {
        lock_name(LEADER_PREFIX, &self.0)
    }

    /// The lock held, while the master is disabled, by whoever disabled it.
    pub fn disabled_lock(&self) -> LockName {
        lock_name(DISABLED_PREFIX, &self.0)
    }
}

fn lock_name(prefix: &str, name: &str) -> LockName {
    // A valid master name behind a valid prefix is a valid lock name: same characters, and
    // MAX_MASTER_NAME_LEN leaves room for the longest prefix.
    LockName::new(format!("{prefix}{name}"))
        .unwrap_or_else(|error| unreachable!("master name {name:?} made a bad lock name: {error}"))
}

impl fmt::Display for MasterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MasterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for MasterName {
    type Error = baton_core::Error;

    fn try_from(name: String) -> baton_core::Result<Self> {
        Self::new(name)
    }
}

impl From<MasterName> for String {
    fn from(name: MasterName) -> Self {
        name.0
    }
}

impl std::str::FromStr for MasterName {
    type Err = baton_core::Error;

    fn from_str(name: &str) -> baton_core::Result<Self> {
        Self::new(name)
    }
}

/// The timings of a master, with the seed's names and defaults.
///
/// In files and the environment each is a number of milliseconds (`8000`) or a duration with
/// its unit (`"8s"`, `"1m 30s"`); keys may be written as the seed wrote them (`heartbeatInterval`)
/// or in snake case (`heartbeat_interval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSettings {
    /// How long after start an instance waits before it first tries to become master.
    #[serde(alias = "initDelay", with = "millis")]
    pub init_delay: Duration,
    /// The longest an instance waits between two looks at the master lease when the backend
    /// gives no sooner signal. Waiting instances watch the lease through the backend (a
    /// release wakes them, and the backend looks again often enough to see an expiry), so a
    /// crashed master is replaced as soon as its lease runs out, not up to this much later.
    #[serde(alias = "checkMasterInterval", with = "millis")]
    pub check_master_interval: Duration,
    /// How often the master renews its lease.
    #[serde(alias = "heartbeatInterval", with = "millis")]
    pub heartbeat_interval: Duration,
    /// How many times a failed renewal is tried again before the master gives up leadership.
    #[serde(alias = "maxHeartbeatRetryCount")]
    pub max_heartbeat_retry_count: u32,
    /// How long the master's lease lasts without renewal: the longest a crashed master keeps
    /// others waiting. `None` (the default) means `heartbeat_interval × (max_heartbeat_retry_count
    /// + 1)`, room for every retry: 32 s with the other defaults.
    #[serde(
        default,
        with = "millis_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<Duration>,
}

impl Default for MasterSettings {
    /// The seed's defaults: 1 s initial delay, 30 s check interval, 8 s heartbeat, 3 retries.
    fn default() -> Self {
        Self {
            init_delay: Duration::from_millis(1000),
            check_master_interval: Duration::from_millis(30_000),
            heartbeat_interval: Duration::from_millis(8000),
            max_heartbeat_retry_count: 3,
            lease: None,
        }
    }
}

/// The shortest lease a master may have.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// The share of a lease the master keeps in hand: it stops acting once its own clock says
/// `lease − lease / SAFETY_DIVISOR` has passed since it asked for the lease, before the backend
/// can hand leadership to anyone else.
pub const SAFETY_DIVISOR: u32 = 10;

impl MasterSettings {
    /// The lease in force: the configured one, or the default derived from the heartbeat.
    pub fn effective_lease(&self) -> Duration {
        self.lease.unwrap_or_else(|| {
            self.heartbeat_interval
                .saturating_mul(self.max_heartbeat_retry_count.saturating_add(1))
        })
    }

    /// The part of the lease the master acts in: the lease less its safety margin.
    pub fn safe_lease(&self) -> Duration {
        let lease = self.effective_lease();
        lease - lease / SAFETY_DIVISOR
    }

    /// Refuses timings that cannot work.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] naming the setting and why: a zero check interval or heartbeat, a
    /// lease shorter than [`MIN_LEASE`] or longer than [`baton_core::MAX_TTL`], or a heartbeat
    /// interval not shorter than the lease less its safety margin (the master would lose its
    /// lease between two renewals).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.check_master_interval.is_zero() {
            return Err(SettingsError::new(
                "checkMasterInterval",
                "must be greater than zero",
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(SettingsError::new(
                "heartbeatInterval",
                "must be greater than zero",
            ));
        }
        let lease = self.effective_lease();
        if lease < MIN_LEASE {
            return Err(SettingsError::new(
                "lease",
                format!(
                    "{} is shorter than the {} allowed",
                    ms(lease),
                    ms(MIN_LEASE)
                ),
            ));
        }
        if lease > baton_core::MAX_TTL {
            return Err(SettingsError::new(
                "lease",
                format!(
                    "{} is longer than the {} allowed",
                    ms(lease),
                    ms(baton_core::MAX_TTL)
                ),
            ));
        }
        if self.heartbeat_interval >= self.safe_lease() {
            return Err(SettingsError::new(
                "heartbeatInterval",
                format!(
                    "{} must be shorter than the lease ({}) less its {}% safety margin ({}): \
                     the master would lose its lease between two renewals",
                    ms(self.heartbeat_interval),
                    ms(lease),
                    100 / SAFETY_DIVISOR,
                    ms(self.safe_lease()),
                ),
            ));
        }
        Ok(())
    }
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// Timings given in code, each overriding every other source when set (the seed's
/// `startMaster` options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsOverrides {
    /// See [`MasterSettings::init_delay`].
    #[serde(
        default,
        with = "millis_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub init_delay: Option<Duration>,
    /// See [`MasterSettings::check_master_interval`].
    #[serde(
        default,
        with = "millis_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub check_master_interval: Option<Duration>,
    /// See [`MasterSettings::heartbeat_interval`].
    #[serde(
        default,
        with = "millis_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_interval: Option<Duration>,
    /// See [`MasterSettings::max_heartbeat_retry_count`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_heartbeat_retry_count: Option<u32>,
    /// See [`MasterSettings::lease`].
    #[serde(
        default,
        with = "millis_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<Duration>,
}

impl SettingsOverrides {
    /// `settings` with every override that is set applied.
    pub fn apply(&self, mut settings: MasterSettings) -> MasterSettings {
        if let Some(value) = self.init_delay {
            settings.init_delay = value;
        }
        if let Some(value) = self.check_master_interval {
            settings.check_master_interval = value;
        }
        if let Some(value) = self.heartbeat_interval {
            settings.heartbeat_interval = value;
        }
        if let Some(value) = self.max_heartbeat_retry_count {
            settings.max_heartbeat_retry_count = value;
        }
        if self.lease.is_some() {
            settings.lease = self.lease;
        }
        settings
    }
}

/// Everything a [`MasterExecutor`](crate::MasterExecutor) needs besides its backend and job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterOptions {
    /// Which master this instance competes for.
    pub lock_name: MasterName,
    /// Its timings.
    pub settings: MasterSettings,
    /// Who this instance is, as holders are shown; `None` makes one from the host name, the
    /// process id and a random suffix, unique per executor.
    pub owner: Option<Owner>,
}

impl MasterOptions {
    /// Options for `lock_name` with the default settings.
    pub fn new(lock_name: MasterName) -> Self {
        Self {
            lock_name,
            settings: MasterSettings::default(),
            owner: None,
        }
    }

    /// These options with `settings`.
    pub fn with_settings(mut self, settings: MasterSettings) -> Self {
        self.settings = settings;
        self
    }

    /// These options with the instance known as `owner`.
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }
}

/// A setting that cannot work, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid master setting {setting}: {message}")]
pub struct SettingsError {
    /// The setting, by the seed's name.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SettingsError {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

/// An owner name unique to one executor: `host-pid-random`.
pub(crate) fn default_owner() -> Owner {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty() && host.len() <= 100)
        .unwrap_or_else(|| "host".to_owned());
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos())
        ^ std::process::id().rotate_left(16)
        ^ next_sequence();
    Owner::new(format!("{host}-{}-{unique:08x}", std::process::id()))
        .or_else(|_| Owner::new(format!("host-{}-{unique:08x}", std::process::id())))
        .unwrap_or_else(|error| unreachable!("a plain owner name was refused: {error}"))
}

fn next_sequence() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    SEQUENCE.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

/// Durations as whole milliseconds, read from a number or a string with units.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    /// `"8000"` (milliseconds) or `"8s"`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if let Ok(ms) = text.parse::<u64>() {
            return Ok(Duration::from_millis(ms));
        }
        humantime::parse_duration(text).map_err(|error| {
            format!("{text:?} is neither milliseconds nor a duration such as \"8s\": {error}")
        })
    }
}

/// [`millis`] for optional values.
pub(crate) mod millis_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::millis::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::millis")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(value)| value))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_and_the_lease_covers_every_retry() {
        let settings = MasterSettings::default();
        assert_eq!(settings.init_delay, Duration::from_millis(1000));
        assert_eq!(
            settings.check_master_interval,
            Duration::from_millis(30_000)
        );
        assert_eq!(settings.heartbeat_interval, Duration::from_millis(8000));
        assert_eq!(settings.max_heartbeat_retry_count, 3);
        assert_eq!(settings.effective_lease(), Duration::from_secs(32));
        settings.validate().unwrap();
    }

    #[test]
    fn a_heartbeat_not_shorter_than_the_lease_is_refused_with_a_clear_error() {
        let settings = MasterSettings {
            lease: Some(Duration::from_secs(5)),
            ..MasterSettings::default()
        };
        let error = settings.validate().unwrap_err();
        assert_eq!(error.setting, "heartbeatInterval");
        let text = error.to_string();
        assert!(
            text.contains("8000 ms must be shorter than the lease (5000 ms)"),
            "{text}"
        );
        let no_retries = MasterSettings {
            max_heartbeat_retry_count: 0,
            ..MasterSettings::default()
        };
        assert_eq!(
            no_retries.validate().unwrap_err().setting,
            "heartbeatInterval"
        );
    }

    #[test]
    fn nonsense_timings_are_refused() {
        let zero_check = MasterSettings {
            check_master_interval: Duration::ZERO,
            ..MasterSettings::default()
        };
        assert_eq!(
            zero_check.validate().unwrap_err().setting,
            "checkMasterInterval"
        );
        let tiny_lease = MasterSettings {
            heartbeat_interval: Duration::from_millis(10),
            lease: Some(Duration::from_millis(50)),
            ..MasterSettings::default()
        };
        assert_eq!(tiny_lease.validate().unwrap_err().setting, "lease");
    }

    #[test]
    fn master_names_are_validated_and_leave_room_for_their_prefixes() {
        assert!(MasterName::new("").is_err());
        assert!(MasterName::new(" x").is_err());
        assert!(MasterName::new("a".repeat(MAX_MASTER_NAME_LEN + 1)).is_err());
        let longest = MasterName::new("a".repeat(MAX_MASTER_NAME_LEN)).unwrap();
        assert!(longest.disabled_lock().as_str().len() <= MAX_NAME_LEN);
        let name = MasterName::new("JOB-SCHEDULER").unwrap();
        assert_ne!(name.leader_lock(), name.disabled_lock());
    }

    #[test]
    fn durations_read_as_milliseconds_or_with_units() {
        assert_eq!(millis::parse("8000").unwrap(), Duration::from_millis(8000));
        assert_eq!(millis::parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(millis::parse("soon").is_err());
    }
}
