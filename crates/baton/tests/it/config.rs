//! Configuration: precedence of defaults, file, environment and flags, and rejection of bad
//! settings with the key named.

// `Jail::expect_with` takes closures returning figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use baton::config::{self, BatonConfig, ConfigOverrides};
use figment::Jail;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn load_error(file: Option<&Path>, overrides: &ConfigOverrides) -> String {
    format!("{:#}", config::load(file, overrides).unwrap_err())
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    Jail::expect_with(|_jail| {
        let config = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(config, BatonConfig::default());
        assert_eq!(config.backend, "sqlite://baton.db");
        assert_eq!(config.table_prefix, "baton_");
        assert_eq!(config.listen, addr("127.0.0.1:7600"));
        assert_eq!(config.server, "http://127.0.0.1:7600");
        assert_eq!(config.retention, Duration::from_secs(7 * 24 * 3600));
        Ok(())
    });
}

#[test]
fn file_overrides_defaults_env_overrides_file_and_flags_override_env() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "baton.toml",
            r#"
                backend = "memory://"
                listen = "127.0.0.1:7001"
                server = "http://file:1"
                retention = "12h"
            "#,
        )?;
        let from_file = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(from_file.listen, addr("127.0.0.1:7001"));
        assert_eq!(from_file.server, "http://file:1");
        assert_eq!(from_file.retention, Duration::from_secs(12 * 3600));

        jail.set_env("BATON_LISTEN", "127.0.0.1:7002");
        jail.set_env("BATON_SERVER", "http://env:2");
        let from_env = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(from_env.listen, addr("127.0.0.1:7002"));
        assert_eq!(from_env.server, "http://env:2");
        assert_eq!(from_env.retention, Duration::from_secs(12 * 3600));

        let flags = ConfigOverrides {
            server: Some("http://flag:3".to_owned()),
            retention: Some(Duration::from_secs(60)),
            ..ConfigOverrides::default()
        };
        let from_flags = config::load(None, &flags).unwrap();
        assert_eq!(from_flags.server, "http://flag:3");
        assert_eq!(from_flags.retention, Duration::from_secs(60));
        assert_eq!(from_flags.listen, addr("127.0.0.1:7002"));
        Ok(())
    });
}

#[test]
fn an_explicit_config_file_is_read_and_must_exist() {
    Jail::expect_with(|jail| {
        jail.create_file("baton.toml", r#"listen = "127.0.0.1:7100""#)?;
        jail.create_file("other.toml", r#"listen = "127.0.0.1:7200""#)?;
        let config =
            config::load(Some(Path::new("other.toml")), &ConfigOverrides::default()).unwrap();
        assert_eq!(config.listen, addr("127.0.0.1:7200"));

        let error = load_error(Some(Path::new("missing.toml")), &ConfigOverrides::default());
        assert_eq!(error, "config file missing.toml does not exist");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_rejected_naming_the_key() {
    Jail::expect_with(|jail| {
        jail.create_file("baton.toml", r#"listn = "127.0.0.1:7100""#)?;
        let error = load_error(None, &ConfigOverrides::default());
        assert!(
            error.contains(r#"unknown key "listn" in baton.toml"#),
            "{error}"
        );
        assert!(
            error.contains("known keys: backend, table_prefix, listen"),
            "{error}"
        );

        jail.create_file("baton.toml", "")?;
        jail.set_env("BATON_BAKEND", "memory://");
        let error = load_error(None, &ConfigOverrides::default());
        assert!(error.contains("unknown key BATON_BAKEND"), "{error}");
        Ok(())
    });
}

#[test]
fn test_tooling_variables_are_not_taken_for_settings() {
    Jail::expect_with(|jail| {
        jail.set_env("BATON_TEST_REDIS_URL", "redis://127.0.0.1:16379");
        jail.set_env("BATON_SERVICES_DIR", "/tmp/services");
        jail.set_env("BATON_CONFORMANCE_FILTER", "lock");
        jail.set_env("BATON_LISTEN", "127.0.0.1:7101");
        let config =
            config::load(None, &ConfigOverrides::default()).expect("tooling variables are ignored");
        assert_eq!(config.listen.port(), 7101);
        Ok(())
    });
}

#[test]
fn invalid_values_are_rejected_naming_the_key_and_its_source() {
    Jail::expect_with(|jail| {
        jail.create_file("baton.toml", r#"listen = "not an address""#)?;
        let error = load_error(None, &ConfigOverrides::default());
        assert!(
            error.contains(r#"invalid value for key "listen" in baton.toml"#),
            "{error}"
        );

        jail.create_file("baton.toml", r#"retention = "a fortnight""#)?;
        let error = load_error(None, &ConfigOverrides::default());
        assert!(error.contains(r#"key "retention""#), "{error}");

        jail.create_file("baton.toml", "")?;
        jail.set_env("BATON_LISTEN", "7600");
        let error = load_error(None, &ConfigOverrides::default());
        assert!(
            error.contains("invalid value for key BATON_LISTEN in the environment"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn backend_and_server_urls_are_checked_at_load() {
    Jail::expect_with(|jail| {
        jail.set_env("BATON_BACKEND", "mongodb://user:hunter2@host");
        let error = load_error(None, &ConfigOverrides::default());
        assert!(
            error.contains(r#"invalid value for key "backend""#),
            "{error}"
        );
        assert!(error.contains("memory://, sqlite://"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");

        jail.set_env("BATON_BACKEND", "memory://");
        jail.set_env("BATON_SERVER", "ftp://host");
        let error = load_error(None, &ConfigOverrides::default());
        assert!(
            error.contains(r#"invalid value for key "server""#),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn malformed_toml_is_rejected_naming_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file("baton.toml", "listen = ")?;
        let error = load_error(None, &ConfigOverrides::default());
        assert!(error.contains("baton.toml"), "{error}");
        Ok(())
    });
}

#[test]
fn baton_config_in_the_environment_is_not_taken_for_a_setting() {
    Jail::expect_with(|jail| {
        jail.set_env("BATON_CONFIG", "elsewhere.toml");
        let config = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(config, BatonConfig::default());
        Ok(())
    });
}

#[test]
fn show_names_where_each_setting_came_from_and_hides_the_token() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "baton.toml",
            r#"
                listen = "127.0.0.1:7001"
                server = "http://file:1"
                api_token = "a-secret-token-of-32-characters!"
                [master]
                lease = "5s"
                heartbeat_interval = "1s"
            "#,
        )?;
        jail.set_env("BATON_SERVER", "http://env:2");
        jail.set_env("BATON_BROKER__JOB_TIMEOUT", "45s");
        let flags = ConfigOverrides {
            retention: Some(Duration::from_secs(60)),
            ..ConfigOverrides::default()
        };
        let settings = config::show(None, &flags).unwrap();
        let find = |key: &str| {
            settings
                .iter()
                .find(|setting| setting.key == key)
                .unwrap_or_else(|| panic!("{key} is not shown: {settings:?}"))
        };
        assert_eq!(find("backend").source, "default");
        assert_eq!(find("backend").value, "sqlite://baton.db");
        assert_eq!(find("listen").source, "baton.toml");
        assert_eq!(find("listen").value, "127.0.0.1:7001");
        assert_eq!(find("server").source, "environment (BATON_SERVER)");
        assert_eq!(find("server").value, "http://env:2");
        assert_eq!(find("retention").source, "flag");
        assert_eq!(find("master.lease").source, "baton.toml");
        assert_eq!(find("master.init_delay").source, "default");
        assert_eq!(
            find("broker.job_timeout").source,
            "environment (BATON_BROKER__JOB_TIMEOUT)",
            "a nested key's variable, as it must be spelt"
        );
        assert_eq!(find("api_token").value, "***");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("a-secret-token"), "{shown}");
        Ok(())
    });
}

#[test]
fn show_refuses_a_misspelt_key_by_name() {
    Jail::expect_with(|jail| {
        jail.create_file("baton.toml", "listne = \"127.0.0.1:7001\"\n")?;
        let error = format!(
            "{:#}",
            config::show(None, &ConfigOverrides::default()).unwrap_err()
        );
        assert!(error.contains("unknown key \"listne\""), "{error}");
        Ok(())
    });
}

/// `baton.example.toml` at the repository root, which documents every setting.
const EXAMPLE: &str = include_str!("../../../../baton.example.toml");

#[test]
fn the_example_file_holds_exactly_the_defaults_and_mentions_every_setting() {
    Jail::expect_with(|jail| {
        jail.create_file("baton.toml", EXAMPLE)?;
        let config = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(config, BatonConfig::default());
        for setting in config::show(None, &ConfigOverrides::default()).unwrap() {
            let name = setting.key.rsplit('.').next().unwrap().to_owned();
            assert!(
                EXAMPLE.contains(&format!("{name} = ")),
                "baton.example.toml does not document {}",
                setting.key
            );
        }
        for optional in ["api_token", "lease"] {
            assert!(EXAMPLE.contains(&format!("# {optional} = ")), "{optional}");
        }
        Ok(())
    });
}
