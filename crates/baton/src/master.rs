//! `baton master …` and the `/api/mastercontrols` routes: run a command on exactly one instance
//! of a cluster (a cluster-wide singleton), and disable, enable and list masters.
//!
//! | Route                                 | Body                              | Answer                  |
//! |---------------------------------------|-----------------------------------|-------------------------|
//! | `POST /api/mastercontrols/disable`    | `{"lockName": …, "reason": …}`    | the master's [`ControlEntry`] |
//! | `POST /api/mastercontrols/enable`     | `{"lockName": …}`                 | the master's [`ControlEntry`] |
//! | `GET /api/mastercontrols`             |                                   | every [`ControlEntry`]  |
//! | `GET /api/v1/masters`                 |                                   | every [`ControlEntry`]  |
//! | `POST /api/v1/masters/{name}/disable` | `{"reason": …}` ([`DisableBody`])  | the master's [`ControlEntry`] |
//! | `POST /api/v1/masters/{name}/enable`  |                                   | the master's [`ControlEntry`] |
//!
//! The `/api/mastercontrols` routes are the paths of the system these controls replace, kept
//! as aliases of the `/api/v1/masters` ones.
//!
//! The `POST` routes change state: they need `Authorization: Bearer <api_token>` with the
//! configured `api_token` (`401` without it, `403` with a wrong one), and are refused (`403`)
//! when no token is configured, as the system these controls replace refused them.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use baton_core::{Backend, FencingToken, Owner, Timestamp};
use baton_master::{
    DisableOutcome, Leadership, MasterControl, MasterEvent, MasterExecutor, MasterJob, MasterName,
    MasterOptions, MasterStatus, SettingsOverrides, StopCause,
};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ApiJson, ApiPath};
use crate::backend;
use crate::cli::parse_duration;
use crate::config::{self, ConfigOverrides};
use crate::output::{self, OutputFormat};
use crate::wire::ErrorBody;

/// The environment variable that hands the leadership's fencing token to the command.
pub const FENCING_TOKEN_ENV: &str = "BATON_FENCING_TOKEN";
/// The environment variable that names the master to the command.
pub const MASTER_NAME_ENV: &str = "BATON_MASTER_NAME";

/// `baton master`: cluster-wide singletons.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: MasterCommand,
}

/// The subcommands of `baton master`.
#[derive(Debug, Subcommand)]
pub enum MasterCommand {
    /// Run a command on exactly one of the instances running this, and on another on failover
    #[command(
        long_about = "Run a command on exactly one of the instances running this, and on \
        another on failover.\n\n\
        Every instance started with the same --name competes for leadership through the \
        backend; the leader runs CMD with BATON_FENCING_TOKEN (its leadership's fencing token) \
        and BATON_MASTER_NAME in its environment. When leadership is lost (the master is \
        disabled, its lease could not be renewed, or this instance shuts down) CMD gets SIGTERM, \
        then SIGKILL after --grace. If CMD exits by itself, this instance gives up leadership and \
        exits with CMD's status, so that another instance takes over. Nothing runs in a process \
        killed with SIGKILL, so if this instance is, CMD is left running: run it under a \
        supervisor that kills the whole process group (as systemd does), and have CMD present \
        BATON_FENCING_TOKEN to what it writes, so that a deposed leader's writes are refused.\n\n\
        Timings come from [master] in baton.toml, BATON_MASTER_* (or the seed's INIT_DELAY, \
        CHECK_MASTER_INTERVAL, MASTER_JOB_HEARTBEAT_INTERVAL, MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT) \
        and these flags, in rising precedence.\n\n\
        Example: baton master run --name scheduler --lease 2s --heartbeat-interval 500ms -- ./scheduler"
    )]
    Run(RunArgs),
    /// Disable a master: its leader stops, and no instance leads until it is enabled
    Disable(DisableArgs),
    /// Enable a disabled master: one of the waiting instances becomes its leader
    Enable(NameArgs),
    /// List every master that leads or is disabled: holder, since, token, disabled and why
    /// (a table; JSON with --output json)
    Status(StatusArgs),
}

/// The backend flags every `baton master` subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// Backend URL [config: backend, default: sqlite://baton.db]
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,

    /// Prefix of every table the backend creates [config: table_prefix, default: baton_]
    #[arg(long, value_name = "PREFIX")]
    pub table_prefix: Option<String>,
}

impl BackendArgs {
    fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            backend: self.backend.clone(),
            table_prefix: self.table_prefix.clone(),
            ..ConfigOverrides::default()
        }
    }
}

/// Flags of `baton master run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The master's name (the lock all its instances compete for)
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// How long CMD may take to exit after SIGTERM before it gets SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Delay before first competing [config: master.init_delay, default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub init_delay: Option<Duration>,

    /// Longest wait between looks at the lease [config: master.check_master_interval, default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub check_master_interval: Option<Duration>,

    /// How often the leader renews its lease [config: master.heartbeat_interval, default: 8s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,

    /// Failed renewals retried before giving up [config: master.max_heartbeat_retry_count, default: 3]
    #[arg(long, value_name = "N")]
    pub max_heartbeat_retry_count: Option<u32>,

    /// The lease: how long a crashed leader keeps the others waiting
    /// [config: master.lease, default: heartbeat interval × (retries + 1)]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub backend: BackendArgs,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Flags of `baton master disable`.
#[derive(Debug, Args)]
pub struct DisableArgs {
    /// The master's name
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Why, shown by `baton master status`
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "disabled from the command line"
    )]
    pub reason: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub backend: BackendArgs,
}

/// Flags of `baton master enable`.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The master's name
    #[arg(long, value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub backend: BackendArgs,
}

/// Flags of `baton master status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to print: `table` (aligned columns, for people) or `json` (for scripts)
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "table")]
    pub output: OutputFormat,

    /// The same as --output json
    #[arg(long, conflicts_with = "output")]
    pub json: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub backend: BackendArgs,
}

/// Runs a `baton master` subcommand.
///
/// # Errors
///
/// Bad settings, an unreachable backend, or (for `run`) a command that failed.
pub async fn run(file: Option<&Path>, args: MasterArgs) -> anyhow::Result<()> {
    match args.command {
        MasterCommand::Run(args) => run_command(file, args).await,
        MasterCommand::Disable(args) => {
            let control = control(file, &args.backend).await?;
            let name = MasterName::new(&args.name)?;
            let outcome = control.disable(&name, &args.reason, &cli_owner()?).await?;
            match outcome {
                DisableOutcome::Disabled(_) => println!("master {name} disabled: {}", args.reason),
                DisableOutcome::AlreadyDisabled(disabled) => {
                    println!("master {name} was already disabled: {}", disabled.reason);
                }
            }
            Ok(())
        }
        MasterCommand::Enable(args) => {
            let control = control(file, &args.backend).await?;
            let name = MasterName::new(&args.name)?;
            if control.enable(&name).await? {
                println!("master {name} enabled");
            } else {
                println!("master {name} was not disabled");
            }
            Ok(())
        }
        MasterCommand::Status(args) => {
            let control = control(file, &args.backend).await?;
            let entries: Vec<ControlEntry> = control
                .status(&[])
                .await?
                .into_iter()
                .map(ControlEntry::from)
                .collect();
            let format = if args.json {
                OutputFormat::Json
            } else {
                args.output
            };
            output::print(entries.as_slice(), format)
        }
    }
}

async fn control(
    file: Option<&Path>,
    args: &BackendArgs,
) -> anyhow::Result<MasterControl<dyn Backend>> {
    let config = config::load(file, &args.overrides())?;
    let backend = backend::connect(&config.backend, &config.table_prefix).await?;
    Ok(MasterControl::new(backend))
}

/// Who disables from this command line: `cli-<user>@<host>`.
fn cli_owner() -> anyhow::Result<Owner> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|host| host.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    Ok(Owner::new(format!("cli-{user}@{host}")).or_else(|_| Owner::new("cli"))?)
}

/// One master as `GET /api/mastercontrols` and `baton master status --json` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlEntry {
    /// The master's name.
    pub lock_name: String,
    /// The instance that leads, if any.
    pub holder: Option<String>,
    /// Since when it leads (RFC 3339, the backend's clock).
    pub since: Option<String>,
    /// The fencing token of its leadership.
    pub token: Option<u64>,
    /// When its lease runs out unless renewed (RFC 3339, the backend's clock).
    pub expires_at: Option<String>,
    /// Whether the holder's process heartbeat is current.
    pub holder_alive: Option<bool>,
    /// Whether the master is disabled.
    pub disabled: bool,
    /// Why, if it is.
    pub disabled_reason: Option<String>,
    /// Who disabled it.
    pub disabled_by: Option<String>,
    /// Since when (RFC 3339, the backend's clock).
    pub disabled_since: Option<String>,
}

impl From<MasterStatus> for ControlEntry {
    fn from(status: MasterStatus) -> Self {
        let holder = status.holder.as_ref();
        let disabled = status.disabled.as_ref();
        Self {
            lock_name: status.lock_name.to_string(),
            holder: holder.map(|h| h.owner.to_string()),
            since: holder.map(|h| rfc3339(h.since)),
            token: holder.map(|h| h.token.get()),
            expires_at: holder.map(|h| rfc3339(h.expires_at)),
            holder_alive: holder.and_then(|h| h.alive),
            disabled: disabled.is_some(),
            disabled_reason: disabled.map(|d| d.reason.clone()),
            disabled_by: disabled.map(|d| d.by.to_string()),
            disabled_since: disabled.map(|d| rfc3339(d.since)),
        }
    }
}

fn rfc3339(time: Timestamp) -> String {
    humantime::format_rfc3339_millis(time.to_system_time()).to_string()
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The body of `POST /api/mastercontrols/disable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableRequest {
    /// The master's name.
    pub lock_name: String,
    /// Why it is disabled.
    #[serde(default)]
    pub reason: String,
}

/// The body of `POST /api/mastercontrols/enable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnableRequest {
    /// The master's name.
    pub lock_name: String,
}

#[derive(Clone)]
struct ControlState {
    control: MasterControl<dyn Backend>,
}

/// The `/api/v1/masters` routes and their `/api/mastercontrols` aliases over `backend`; the
/// token rule of their `POST`s is [`crate::api::auth`]'s.
pub fn routes(backend: Arc<dyn Backend>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_masters))
        .routes(routes!(disable_named))
        .routes(routes!(enable_named))
        .routes(routes!(list_controls))
        .routes(routes!(disable_master))
        .routes(routes!(enable_master))
        .with_state(ControlState {
            control: MasterControl::new(backend),
        })
}

/// The body of `POST /api/v1/masters/{name}/disable`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    /// Why it is disabled.
    #[serde(default)]
    pub reason: String,
}

/// Every master that leads or is disabled.
#[utoipa::path(get, path = "/api/v1/masters", tag = "masters",
    responses((status = 200, description = "Every master that leads or is disabled", body = Vec<ControlEntry>)))]
async fn list_masters(state: State<ControlState>) -> Result<Json<Vec<ControlEntry>>, ApiError> {
    list_controls(state).await
}

/// Disables the master `name`: its leader stops and no instance leads until it is enabled.
#[utoipa::path(post, path = "/api/v1/masters/{name}/disable", tag = "masters", request_body = DisableBody,
    params(("name" = String, Path, description = "The master's name")),
    responses(
        (status = 200, description = "The master, now disabled", body = ControlEntry),
        (status = 400, description = "A malformed body or master name", body = ErrorBody),
        (status = 401, description = "No API token", body = ErrorBody),
        (status = 403, description = "A wrong API token, or none configured", body = ErrorBody),
    ))]
async fn disable_named(
    State(state): State<ControlState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<DisableBody>,
) -> Result<Json<ControlEntry>, ApiError> {
    disable(&state, &name, &body.reason).await.map(Json)
}

/// Enables the master `name` again.
#[utoipa::path(post, path = "/api/v1/masters/{name}/enable", tag = "masters",
    params(("name" = String, Path, description = "The master's name")),
    responses(
        (status = 200, description = "The master, now enabled", body = ControlEntry),
        (status = 400, description = "An invalid master name", body = ErrorBody),
        (status = 401, description = "No API token", body = ErrorBody),
        (status = 403, description = "A wrong API token, or none configured", body = ErrorBody),
    ))]
async fn enable_named(
    State(state): State<ControlState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ControlEntry>, ApiError> {
    enable(&state, &name).await.map(Json)
}

/// Every master that leads or is disabled (the alias of `GET /api/v1/masters`).
#[utoipa::path(get, path = "/api/mastercontrols", tag = "masters",
    responses((status = 200, description = "Every master that leads or is disabled", body = Vec<ControlEntry>)))]
async fn list_controls(
    State(state): State<ControlState>,
) -> Result<Json<Vec<ControlEntry>>, ApiError> {
    let entries = state.control.status(&[]).await?;
    Ok(Json(entries.into_iter().map(ControlEntry::from).collect()))
}

/// Disables a master: its leader stops and no instance leads until it is enabled.
#[utoipa::path(post, path = "/api/mastercontrols/disable", tag = "masters", request_body = DisableRequest,
    responses(
        (status = 200, description = "The master, now disabled", body = ControlEntry),
        (status = 400, description = "A malformed body or master name", body = ErrorBody),
        (status = 401, description = "No API token", body = ErrorBody),
        (status = 403, description = "A wrong API token, or none configured", body = ErrorBody),
    ))]
async fn disable_master(
    State(state): State<ControlState>,
    ApiJson(request): ApiJson<DisableRequest>,
) -> Result<Json<ControlEntry>, ApiError> {
    disable(&state, &request.lock_name, &request.reason)
        .await
        .map(Json)
}

/// Disables the master `name` for `reason` (a default reason when empty).
async fn disable(state: &ControlState, name: &str, reason: &str) -> Result<ControlEntry, ApiError> {
    let name = MasterName::new(name)?;
    let reason = if reason.is_empty() {
        "disabled through the api"
    } else {
        reason
    };
    let by = Owner::new("api")?;
    state.control.disable(&name, reason, &by).await?;
    entry(&state.control, &name).await
}

/// Enables the master `name`.
async fn enable(state: &ControlState, name: &str) -> Result<ControlEntry, ApiError> {
    let name = MasterName::new(name)?;
    state.control.enable(&name).await?;
    entry(&state.control, &name).await
}

/// Enables a master again.
#[utoipa::path(post, path = "/api/mastercontrols/enable", tag = "masters", request_body = EnableRequest,
    responses(
        (status = 200, description = "The master, now enabled", body = ControlEntry),
        (status = 400, description = "A malformed body or master name", body = ErrorBody),
        (status = 401, description = "No API token", body = ErrorBody),
        (status = 403, description = "A wrong API token, or none configured", body = ErrorBody),
    ))]
async fn enable_master(
    State(state): State<ControlState>,
    ApiJson(request): ApiJson<EnableRequest>,
) -> Result<Json<ControlEntry>, ApiError> {
    enable(&state, &request.lock_name).await.map(Json)
}

async fn entry(
    control: &MasterControl<dyn Backend>,
    name: &MasterName,
) -> Result<ControlEntry, ApiError> {
    let status = control.status(std::slice::from_ref(name)).await?;
    let found = status
        .into_iter()
        .find(|status| &status.lock_name == name)
        .ok_or_else(|| baton_core::Error::not_found(format!("master {name}")))?;
    Ok(ControlEntry::from(found))
}

// ---------------------------------------------------------------------------------------------
// `baton master run`

async fn run_command(file: Option<&Path>, args: RunArgs) -> anyhow::Result<()> {
    let config = config::load(file, &args.backend.overrides())?;
    let overrides = SettingsOverrides {
        init_delay: args.init_delay,
        check_master_interval: args.check_master_interval,
        heartbeat_interval: args.heartbeat_interval,
        max_heartbeat_retry_count: args.max_heartbeat_retry_count,
        lease: args.lease,
    };
    let settings = overrides.apply(config.master);
    settings.validate()?;
    let name = MasterName::new(&args.name)?;
    let backend = backend::connect(&config.backend, &config.table_prefix).await?;
    let (exits, mut exited) = mpsc::unbounded_channel();
    let job = CommandJob {
        command: args.command,
        name: name.clone(),
        grace: args.grace,
        exits,
        running: tokio::sync::Mutex::new(None),
    };
    let options = MasterOptions::new(name.clone()).with_settings(settings);
    let executor = MasterExecutor::start(backend, options, job)?;
    tracing::info!(master = %name, owner = %executor.owner(), "competing for leadership");
    let mut events = executor.events();
    let outcome = loop {
        tokio::select! {
            status = exited.recv() => break status,
            () = crate::serve::shutdown_signal() => break None,
            event = events.recv() => match event {
                Ok(MasterEvent::Disabled(disabled)) => {
                    tracing::info!(master = %name, reason = %disabled.reason, "master is disabled");
                }
                Ok(MasterEvent::TokenRejected { token }) => {
                    tracing::warn!(master = %name, %token, "the backend refused this instance's old token");
                }
                Ok(_) | Err(_) => {}
            },
        }
    };
    executor.shutdown().await;
    match outcome {
        Some(Ok(status)) if status.success() => Ok(()),
        Some(Ok(status)) => bail!("command exited with {status}"),
        Some(Err(error)) => Err(error),
        None => Ok(()),
    }
}

/// The command a leader runs, and how it is stopped.
struct CommandJob {
    command: Vec<String>,
    name: MasterName,
    grace: Duration,
    /// How a command that ended by itself (not stopped) ends `baton master run`.
    exits: mpsc::UnboundedSender<anyhow::Result<ExitStatus>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

/// A command started by a leader.
struct Running {
    pid: u32,
    /// Set before it is signalled, so that its exit is not taken for a failure.
    stopping: Arc<AtomicBool>,
    /// Asks the task that owns the child to SIGKILL it.
    kill: mpsc::UnboundedSender<()>,
    /// Becomes true once it has exited.
    done: watch::Receiver<bool>,
}

#[async_trait]
impl MasterJob for CommandJob {
    async fn start(&self, leadership: Leadership) {
        let token = leadership.token();
        let Some((program, arguments)) = self.command.split_first() else {
            return;
        };
        let spawned = tokio::process::Command::new(program)
            .args(arguments)
            .env(FENCING_TOKEN_ENV, token.to_string())
            .env(MASTER_NAME_ENV, self.name.as_str())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {program:?}"));
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let _ = self.exits.send(Err(error));
                return;
            }
        };
        let Some(pid) = child.id() else {
            let _ = self
                .exits
                .send(Err(anyhow::anyhow!("{program:?} exited at once")));
            return;
        };
        tracing::info!(master = %self.name, %token, pid, "running the command");
        let stopping = Arc::new(AtomicBool::new(false));
        let (kill, mut killed) = mpsc::unbounded_channel::<()>();
        let (done_tx, done) = watch::channel(false);
        let exits = self.exits.clone();
        let stopping_seen = stopping.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(()) = killed.recv() => {
                        let _ = child.start_kill();
                    }
                }
            };
            done_tx.send_replace(true);
            if !stopping_seen.load(Ordering::SeqCst) {
                let _ = exits.send(status.context("cannot wait for the command"));
            }
        });
        *self.running.lock().await = Some(Running {
            pid,
            stopping,
            kill,
            done,
        });
    }

    async fn stop(&self, token: FencingToken, cause: StopCause) {
        let Some(mut running) = self.running.lock().await.take() else {
            return;
        };
        if *running.done.borrow() {
            return;
        }
        tracing::info!(master = %self.name, %token, %cause, pid = running.pid, "stopping the command");
        running.stopping.store(true, Ordering::SeqCst);
        if let Ok(pid) = i32::try_from(running.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(self.grace, exited(&mut running.done))
            .await
            .is_err()
        {
            tracing::warn!(master = %self.name, pid = running.pid, grace = ?self.grace, "the command ignored SIGTERM; killing it");
            let _ = running.kill.send(());
            exited(&mut running.done).await;
        }
    }
}

/// Resolves once the command has exited.
async fn exited(done: &mut watch::Receiver<bool>) {
    let _ = done.wait_for(|done| *done).await;
}
