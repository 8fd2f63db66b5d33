//! The binary's settings, read with figment. Only this crate knows figment: subsystems get plain
//! values or `*Config` structs built from [`BatonConfig`].
//!
//! Precedence, lowest first: [`BatonConfig::default`], the TOML file, `BATON_*` environment
//! variables, command-line flags ([`ConfigOverrides`]). Unknown keys and invalid values are
//! refused with an error that names the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "baton.toml";

/// The prefix of the environment variables read as settings: `BATON_LISTEN` sets `listen`.
pub const ENV_PREFIX: &str = "BATON_";

/// `BATON_*` variables that are not settings: `BATON_CONFIG` names the file itself; the others
/// are what `baton lock run`, `baton task run` and `baton master run` hand the commands they
/// run, which may call `baton` in turn.
const ENV_NOT_SETTINGS: &[&str] = &[
    "config",
    "fencing_token",
    "task_id",
    "task_log",
    "task_locks",
];

/// Families of `BATON_*` variables that belong to the test tooling, not to the binary:
/// `BATON_TEST_*_URL` (servers for backend tests), `BATON_SERVICES_*` (`scripts/services`),
/// `BATON_CONFORMANCE_*` (the conformance suite). Every other `BATON_*` variable must be a
/// setting, so that a misspelt one is an error rather than silently ignored.
const ENV_TOOLING_PREFIXES: &[&str] = &["test_", "services_", "conformance_"];

/// Every setting of the `baton` binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatonConfig {
    /// Backend URL: `sqlite://baton.db` (the embedded default), `postgres://…`, `mysql://…`,
    /// `redis://…`, `memory://`.
    pub backend: String,
    /// Prefix of every table (or key) the backend creates, so Baton can share a database.
    pub table_prefix: String,
    /// Address `baton serve` listens on.
    pub listen: SocketAddr,
    /// Base URL of the server that client commands (`enqueue`, `job`, …) talk to.
    pub server: String,
    /// How long finished jobs are kept before `baton serve` deletes them, such as `7d`.
    #[serde(with = "human_duration")]
    pub retention: Duration,
    /// The bearer token HTTP calls must present (`Authorization: Bearer …`); without one, the
    /// API is open, except the master controls' changes, which are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<ApiToken>,
    /// Whether reads (`GET`) are open to callers without the token when `api_token` is set.
    #[serde(default)]
    pub api_open_reads: bool,
    /// How `baton serve` writes its log lines: `pretty` for people, `json` for log collectors.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where spans are exported over OTLP/HTTP (protobuf), such as `http://127.0.0.1:4318`:
    /// the collector's base URL, to which `/v1/traces` is added. Unset: no export, unless the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) variable is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The master executor's timings (`[master]`), for `baton master run`.
    #[serde(default)]
    pub master: baton_master::MasterSettings,
    /// The job broker over ZeroMQ (`[broker]`), run by `baton serve` when enabled.
    #[serde(default)]
    pub broker: BrokerSettings,
    /// The claim pools `baton serve` looks after (`[sync]`).
    #[serde(default)]
    pub sync: SyncSettings,
    /// Where `baton serve` reads the records and logs of the tasks run on its host (`[tasks]`).
    #[serde(default)]
    pub tasks: TaskSettings,
}

/// The `[tasks]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSettings {
    /// The task directory of `baton task run` on this host (its `--dir`), relative to the
    /// working directory of `baton serve`: `GET /api/v1/tasks` lists its tasks and serves
    /// their logs.
    pub dir: PathBuf,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("baton-tasks"),
        }
    }
}

/// The `[sync]` table: the account-sync claim pools `baton serve` looks after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// The pools whose dead owners' accounts `baton serve` returns to the pool (so they are
    /// claimed again even while no sync process runs its own reaping), and whose claims per
    /// owner `/metrics` reports.
    pub pools: Vec<String>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            pools: vec![crate::monitoring::DEFAULT_POOL.to_owned()],
        }
    }
}

impl SyncSettings {
    /// The pools, checked: each a valid pool name that can take the members-pool suffix.
    ///
    /// # Errors
    ///
    /// The first invalid name.
    pub fn pool_names(&self) -> anyhow::Result<Vec<baton_core::PoolName>> {
        self.pools
            .iter()
            .map(|pool| {
                let name = baton_core::PoolName::new(pool)?;
                baton_sync::members_pool(&name)?;
                Ok(name)
            })
            .collect::<baton_core::Result<_>>()
            .map_err(|e| {
                anyhow::anyhow!("invalid configuration: invalid value in [sync] pools: {e}")
            })
    }
}

/// The `[broker]` table: whether `baton serve` runs the job broker, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// Whether `baton serve` runs the broker.
    pub enabled: bool,
    /// The ROUTER endpoint workers and clients connect to.
    pub endpoint: String,
    /// The PUB endpoint of `<job_id>\n<status>` notices, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_endpoint: Option<String>,
    /// The secret a `quit` command must carry; without one, `quit` is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quit_token: Option<ApiToken>,
    /// A job's execution timeout when it sets none; past it the job follows its retry policy.
    #[serde(with = "human_duration")]
    pub job_timeout: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "tcp://127.0.0.1:5555".to_owned(),
            publish_endpoint: None,
            quit_token: None,
            job_timeout: Duration::from_secs(30),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Pretty,
    /// One JSON object per event: `timestamp`, `level`, `fields`, `target` and the spans.
    Json,
}

/// A secret bearer token; its `Debug` output hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

impl Default for BatonConfig {
    fn default() -> Self {
        Self {
            backend: "sqlite://baton.db".to_owned(),
            table_prefix: "baton_".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7600)),
            server: "http://127.0.0.1:7600".to_owned(),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            api_token: None,
            api_open_reads: false,
            log_format: LogFormat::Pretty,
            otlp_endpoint: None,
            master: baton_master::MasterSettings::default(),
            broker: BrokerSettings::default(),
            sync: SyncSettings::default(),
            tasks: TaskSettings::default(),
        }
    }
}

/// Settings given on the command line; `None` leaves the key to the layers below.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConfigOverrides {
    /// `--backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `--table-prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_prefix: Option<String>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--server`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `--retention`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "human_duration_option"
    )]
    pub retention: Option<Duration>,
}

/// Loads the settings: defaults < the TOML file < `BATON_*` environment < `overrides`.
///
/// `file` is the `--config` path; it must exist. Without it, `./baton.toml` is read if it exists.
///
/// # Errors
///
/// A missing `--config` file, unreadable or malformed TOML, an unknown key, or an invalid value,
/// each named with its key and source.
pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> anyhow::Result<BatonConfig> {
    let config: BatonConfig = layers(file, overrides)?
        .extract()
        .map_err(|errors| anyhow::anyhow!("invalid configuration: {}", describe(errors)))?;
    config.validate()?;
    Ok(config)
}

/// One setting as `baton config show` prints it: its dotted key, its effective value and the
/// layer it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The key, such as `listen` or `master.lease`.
    pub key: String,
    /// The effective value (the API token hidden).
    pub value: serde_json::Value,
    /// Where it came from: `default`, the file's path, `environment (BATON_LISTEN)` or `flag`.
    pub source: String,
}

/// Every setting's effective value and where it came from, after the same checks as [`load`].
///
/// # Errors
///
/// As [`load`].
pub fn show(file: Option<&Path>, overrides: &ConfigOverrides) -> anyhow::Result<Vec<Provenance>> {
    let config = load(file, overrides)?;
    let figment = layers(file, overrides)?;
    let mut settings = Vec::new();
    let tree = serde_json::to_value(&config).context("cannot serialize the configuration")?;
    flatten("", &tree, &mut settings);
    Ok(settings
        .into_iter()
        .map(|(key, value)| {
            let value = if key == "api_token" {
                serde_json::Value::from("***")
            } else {
                value
            };
            let source = figment.find_metadata(&key).map_or_else(
                || "default".to_owned(),
                |metadata| source_of(&key, metadata),
            );
            Provenance { key, value, source }
        })
        .collect())
}

/// The leaves of `tree` as (dotted key, value) pairs.
fn flatten(prefix: &str, tree: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match tree {
        serde_json::Value::Object(fields) => {
            for (name, value) in fields {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&key, value, out);
            }
        }
        value => out.push((prefix.to_owned(), value.clone())),
    }
}

/// A layer's name for people: the file's path, the variable's name, `flag` or `default`.
fn source_of(key: &str, metadata: &figment::Metadata) -> String {
    if let Some(figment::Source::File(path)) = &metadata.source {
        return path.display().to_string();
    }
    // A serialized layer is named after its type.
    if metadata
        .name
        .ends_with(std::any::type_name::<ConfigOverrides>())
    {
        return "flag".to_owned();
    }
    if metadata
        .name
        .ends_with(std::any::type_name::<BatonConfig>())
    {
        return "default".to_owned();
    }
    if metadata.name.to_ascii_lowercase().contains("environment") {
        let variable = format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase());
        return format!("environment ({variable})");
    }
    metadata.name.to_string()
}

/// The layers, lowest first: defaults, the file, the environment, the flags.
fn layers(file: Option<&Path>, overrides: &ConfigOverrides) -> anyhow::Result<Figment> {
    let file = config_file(file)?;
    let mut figment = Figment::from(Serialized::defaults(BatonConfig::default()));
    if let Some(path) = &file {
        figment = figment.merge(baton_master::settings::SeedKeys::new(
            Toml::file_exact(path),
            baton_master::settings::TABLE,
        ));
    }
    Ok(figment
        .merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(ENV_NOT_SETTINGS)
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    !ENV_TOOLING_PREFIXES
                        .iter()
                        .any(|prefix| key.starts_with(prefix))
                        // BATON_MASTER_* are read below, into the [master] table.
                        && !key.starts_with("master_")
                })
                .split("__"),
        )
        .merge(baton_master::settings::env(baton_master::settings::TABLE))
        .merge(Serialized::defaults(overrides)))
}

impl BatonConfig {
    /// Checks what the types alone cannot: the backend URL's scheme and the server URL.
    ///
    /// # Errors
    ///
    /// An error naming the key and what is wrong with its value.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.master
            .validate()
            .context("invalid configuration: invalid value in [master]")?;
        if self
            .api_token
            .as_ref()
            .is_some_and(|token| token.0.trim().len() < 16)
        {
            bail!(
                "invalid configuration: invalid value for key \"api_token\": use at least 16 characters"
            );
        }
        BackendKind::from_url(&self.backend)
            .context("invalid configuration: invalid value for key \"backend\"")?;
        baton_sql::TablePrefix::new(&self.table_prefix)
            .context("invalid configuration: invalid value for key \"table_prefix\"")?;
        let server = reqwest::Url::parse(&self.server).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: invalid value for key \"server\": {:?} is not a url: {e}",
                self.server
            )
        })?;
        if !matches!(server.scheme(), "http" | "https") || !server.has_host() {
            bail!(
                "invalid configuration: invalid value for key \"server\": {:?} is not an http:// or https:// url",
                self.server
            );
        }
        self.sync.pool_names()?;
        if let Some(endpoint) = &self.otlp_endpoint {
            let url = reqwest::Url::parse(endpoint).ok();
            if !url.is_some_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host()) {
                bail!(
                    "invalid configuration: invalid value for key \"otlp_endpoint\": {endpoint:?} \
                     is not an http:// or https:// url (an OTLP/HTTP collector, such as \
                     http://127.0.0.1:4318)"
                );
            }
        }
        Ok(())
    }
}

fn config_file(explicit: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match explicit {
        Some(path) if path.is_file() => Ok(Some(path.to_owned())),
        Some(path) => bail!("config file {} does not exist", path.display()),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            Ok(default.is_file().then_some(default))
        }
    }
}

/// Every error figment found, in one line.
fn describe(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|error| describe_one(&error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One figment error, naming the key as it was written: `listen` in a file, `BATON_LISTEN` in
/// the environment.
fn describe_one(error: &figment::Error) -> String {
    let from_env = error
        .metadata
        .as_ref()
        .is_some_and(|metadata| metadata.name.contains("environment"));
    let key = if from_env {
        format!("{ENV_PREFIX}{}", error.path.join("__").to_uppercase())
    } else {
        format!("{:?}", error.path.join("."))
    };
    let place = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(path)) => format!(" in {}", path.display()),
        _ if from_env => " in the environment".to_owned(),
        _ => String::new(),
    };
    match &error.kind {
        figment::error::Kind::UnknownField(_, known) => format!(
            "unknown key {key}{place} (known keys: {})",
            known.join(", ")
        ),
        kind if error.path.is_empty() => format!("{kind}{place}"),
        kind => format!("invalid value for key {key}{place}: {kind}"),
    }
}

/// Durations as human strings (`7d`, `12h 30m`) in files and the environment.
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::cli::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// [`human_duration`] for an optional value, used only to serialize overrides.
mod human_duration_option {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => super::human_duration::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }
}
