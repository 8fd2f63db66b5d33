//! The master's timings read with figment, per setting: [`MasterSettings::default`] <
//! the `[master]` table of `baton.toml` < the environment < [`SettingsOverrides`] given in code.
//!
//! In the environment each setting has two names: Baton's (`BATON_MASTER_INIT_DELAY`,
//! `BATON_MASTER_CHECK_MASTER_INTERVAL`, `BATON_MASTER_HEARTBEAT_INTERVAL`,
//! `BATON_MASTER_MAX_HEARTBEAT_RETRY_COUNT`, `BATON_MASTER_LEASE`) and, for the first four, the
//! seed's (`INIT_DELAY`, `CHECK_MASTER_INTERVAL`, `MASTER_JOB_HEARTBEAT_INTERVAL`,
//! `MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT`). Where both are set, Baton's wins.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::{MasterSettings, SettingsError, SettingsOverrides};

/// The prefix of Baton's names for the master's environment variables.
pub const ENV_PREFIX: &str = "BATON_MASTER_";

/// The seed's environment variables and the settings they set.
pub const SEED_ENV: [(&str, &str); 4] = [
    ("INIT_DELAY", "init_delay"),
    ("CHECK_MASTER_INTERVAL", "check_master_interval"),
    ("MASTER_JOB_HEARTBEAT_INTERVAL", "heartbeat_interval"),
    (
        "MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT",
        "max_heartbeat_retry_count",
    ),
];

/// The table of `baton.toml` that holds the master's settings.
pub const TABLE: &str = "master";

/// The environment's master settings, keyed as in [`MasterSettings`] under `nest` (such as
/// `"master"`), or at the top when `nest` is empty: the seed's names, then Baton's over them.
pub fn env(nest: &str) -> Figment {
    let nest = nest.to_owned();
    let nested = move |key: &str| {
        if nest.is_empty() {
            key.to_owned()
        } else {
            format!("{nest}.{key}")
        }
    };
    let seed_nested = nested.clone();
    let seed = Env::raw()
        .filter_map(move |key| {
            SEED_ENV
                .iter()
                .find(|(name, _)| key.as_str().eq_ignore_ascii_case(name))
                .map(|(_, setting)| seed_nested(setting).into())
        })
        .lowercase(false);
    let baton = Env::prefixed(ENV_PREFIX).map(move |key| nested(key.as_str()).into());
    Figment::new().merge(seed).merge(baton)
}

/// Every layer below code: the defaults, the `[master]` table of the TOML file at `file` (if
/// given and present), the environment.
pub fn figment(file: Option<&Path>) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(MasterSettings::default()));
    if let Some(path) = file {
        figment = figment.merge(Figment::from(SeedKeys::new(Toml::file(path), TABLE)).focus(TABLE));
    }
    figment.merge(env(""))
}

/// Reads the settings, applies `overrides` from code over them, and validates the result.
///
/// # Errors
///
/// A malformed file, an unknown key, a value that is not a duration or a count, each with its
/// key and source; or a [`SettingsError`] for timings that cannot work.
pub fn load(
    file: Option<&Path>,
    overrides: &SettingsOverrides,
) -> Result<MasterSettings, LoadError> {
    let settings = extract(figment(file).merge(Serialized::defaults(overrides)))?;
    settings.validate()?;
    Ok(settings)
}

/// Extracts settings from any figment whose top level holds them.
///
/// # Errors
///
/// What figment found wrong, each error with its key and source.
pub fn extract(provider: impl Provider) -> Result<MasterSettings, LoadError> {
    Figment::from(provider).extract().map_err(|errors| {
        LoadError::Invalid(
            errors
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// The seed's spellings of the keys (`heartbeatInterval`) and their snake-case names.
pub const SEED_KEYS: [(&str, &str); 4] = [
    ("initDelay", "init_delay"),
    ("checkMasterInterval", "check_master_interval"),
    ("heartbeatInterval", "heartbeat_interval"),
    ("maxHeartbeatRetryCount", "max_heartbeat_retry_count"),
];

/// A provider whose table `table` has the seed's key spellings renamed to snake case, so that
/// a file written with the seed's names and an environment variable with Baton's set the same
/// setting (the higher layer winning) instead of clashing as duplicates.
pub struct SeedKeys<P> {
    inner: P,
    table: String,
}

impl<P: Provider> SeedKeys<P> {
    /// Renames the seed's keys in `inner`'s table `table` (the top level when empty).
    pub fn new(inner: P, table: &str) -> Self {
        Self {
            inner,
            table: table.to_owned(),
        }
    }
}

impl<P: Provider> Provider for SeedKeys<P> {
    fn metadata(&self) -> Metadata {
        self.inner.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.inner.data()?;
        for dict in data.values_mut() {
            if self.table.is_empty() {
                rename_seed_keys(dict);
            } else if let Some(Value::Dict(_, table)) = dict.get_mut(&self.table) {
                rename_seed_keys(table);
            }
        }
        Ok(data)
    }
}

fn rename_seed_keys(dict: &mut Dict) {
    for (seed, snake) in SEED_KEYS {
        if let Some(value) = dict.remove(seed) {
            // Both spellings in one file: the snake-case one wins.
            dict.entry(snake.to_owned()).or_insert(value);
        }
    }
}

/// Why the master's settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A value could not be read.
    #[error("invalid master configuration: {0}")]
    Invalid(String),
    /// The values read cannot work together.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use figment::Jail;

    use super::*;

    const FILE: &str = "baton.toml";

    fn load_in(jail: &Jail, overrides: &SettingsOverrides) -> Result<MasterSettings, LoadError> {
        load(Some(&jail.directory().join(FILE)), overrides)
    }

    #[test]
    fn each_setting_takes_the_highest_layer_that_sets_it() {
        Jail::expect_with(|jail| {
            jail.create_file(
                FILE,
                r#"
                    backend = "sqlite://ignored.db"
                    [master]
                    initDelay = 5000
                    check_master_interval = "20s"
                    heartbeatInterval = 15000
                    maxHeartbeatRetryCount = 10
                "#,
            )?;
            // The file over the defaults.
            let from_file = load_in(jail, &SettingsOverrides::default()).unwrap();
            assert_eq!(from_file.init_delay, Duration::from_secs(5));
            assert_eq!(from_file.check_master_interval, Duration::from_secs(20));
            assert_eq!(from_file.heartbeat_interval, Duration::from_secs(15));
            assert_eq!(from_file.max_heartbeat_retry_count, 10);
            assert_eq!(from_file.lease, None);

            // The environment over the file, per setting; the other settings keep the file's.
            jail.set_env("BATON_MASTER_HEARTBEAT_INTERVAL", "2s");
            jail.set_env("BATON_MASTER_LEASE", "10000");
            let from_env = load_in(jail, &SettingsOverrides::default()).unwrap();
            assert_eq!(from_env.heartbeat_interval, Duration::from_secs(2));
            assert_eq!(from_env.lease, Some(Duration::from_secs(10)));
            assert_eq!(from_env.init_delay, Duration::from_secs(5));

            // Code over the environment.
            let overrides = SettingsOverrides {
                heartbeat_interval: Some(Duration::from_millis(500)),
                init_delay: Some(Duration::ZERO),
                ..SettingsOverrides::default()
            };
            let from_code = load_in(jail, &overrides).unwrap();
            assert_eq!(from_code.heartbeat_interval, Duration::from_millis(500));
            assert_eq!(from_code.init_delay, Duration::ZERO);
            assert_eq!(from_code.lease, Some(Duration::from_secs(10)));
            assert_eq!(from_code.check_master_interval, Duration::from_secs(20));
            Ok(())
        });
    }

    #[test]
    fn the_seeds_environment_names_work_and_batons_win_over_them() {
        Jail::expect_with(|jail| {
            jail.set_env("INIT_DELAY", "0");
            jail.set_env("CHECK_MASTER_INTERVAL", "60000");
            jail.set_env("MASTER_JOB_HEARTBEAT_INTERVAL", "4000");
            jail.set_env("MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT", "5");
            let seed = load(None, &SettingsOverrides::default()).unwrap();
            assert_eq!(seed.init_delay, Duration::ZERO);
            assert_eq!(seed.check_master_interval, Duration::from_secs(60));
            assert_eq!(seed.heartbeat_interval, Duration::from_secs(4));
            assert_eq!(seed.max_heartbeat_retry_count, 5);
            assert_eq!(seed.effective_lease(), Duration::from_secs(24));

            jail.set_env("BATON_MASTER_INIT_DELAY", "250");
            let both = load(None, &SettingsOverrides::default()).unwrap();
            assert_eq!(both.init_delay, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn nothing_set_gives_the_seeds_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(FILE, "listen = \"127.0.0.1:1\"\n")?;
            let settings = load_in(jail, &SettingsOverrides::default()).unwrap();
            assert_eq!(settings, MasterSettings::default());
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        Jail::expect_with(|jail| {
            jail.set_env("BATON_MASTER_HEARTBEAT_INTERVAL", "soon");
            let error = load(None, &SettingsOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                error.to_lowercase().contains("heartbeat_interval"),
                "{error}"
            );
            assert!(error.contains("soon"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(
                FILE,
                "[master]\nheartbeatInterval = 40000\nlease = \"30s\"\n",
            )?;
            let error = load_in(jail, &SettingsOverrides::default()).unwrap_err();
            assert!(
                matches!(error, LoadError::Settings(ref e) if e.setting == "heartbeatInterval"),
                "{error}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(FILE, "[master]\nheartbeat = 4000\n")?;
            let error = load_in(jail, &SettingsOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains("heartbeat"), "{error}");
            Ok(())
        });
    }
}
