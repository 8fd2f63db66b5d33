//! `baton lock …` and `baton task …`: a distributed `flock(1)`, the list of held locks, and
//! tasks run as processes under their locks, with records and logs in a task directory.
//!
//! Exit status of `baton lock run` and `baton task run`: the command's own (128 + the signal
//! number if a signal ended it), or [`LOCKS_BUSY_EXIT_CODE`] when the locks could not be had
//! within `--wait`, or [`LOCKS_LOST_EXIT_CODE`] when they were lost while the command ran (it was
//! then stopped).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use baton_core::{Backend, LockName, Owner};
use baton_tasklocks::{
    Acquired, Blocked, Failure, FairLocks, LockSettings, RunnerConfig, TaskId, TaskRecord,
    TaskRunner, TaskSpec, TaskState, Wait, task_lock,
};
use clap::{Args, Subcommand};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend;
use crate::cli::{OutputArg, parse_duration};
use crate::config::{self, ConfigOverrides};
use crate::output::{self, OutputFormat};

/// Exit status when the locks could not be had within `--wait` (`EX_TEMPFAIL`).
pub const LOCKS_BUSY_EXIT_CODE: u8 = 75;
/// Exit status when the locks were lost while the command ran, and it was stopped.
pub const LOCKS_LOST_EXIT_CODE: u8 = 76;
/// The environment variable that hands the lease's fencing token to the command.
pub const FENCING_TOKEN_ENV: &str = "BATON_FENCING_TOKEN";

/// An exit status a command asks `main` to end with, after it has printed what it had to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitWith(pub u8);

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// `baton lock`: named locks shared by every process on the backend.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LockCommand,
}

/// The subcommands of `baton lock`.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Run a command while holding locks, like flock(1) across hosts
    #[command(
        long_about = "Run a command while holding locks, like flock(1) across hosts.\n\n\
        Takes every --lock at once (or none), waiting in line behind whoever asked first, then \
        runs CMD in its own process group with BATON_FENCING_TOKEN (the lease's fencing token) \
        in its environment, renews the lease while CMD runs and frees the locks the moment it \
        exits. If a renewal fails, CMD gets SIGTERM, then SIGKILL after --grace, before the \
        lease can pass to anyone else. SIGINT, SIGTERM and SIGHUP are passed on to CMD; what CMD \
        leaves running in its process group is killed when it exits.\n\n\
        Exit status: CMD's (128 + N if signal N ended it); 75 if the locks could not be had \
        within --wait; 76 if they were lost while CMD ran.\n\n\
        Example: baton lock run --lock app:42 --reason 'backup of app 42' -- ./backup.sh 42"
    )]
    Run(LockRunArgs),
    /// List held locks, their holders and reasons, and who waits in line (a table; JSON with
    /// --output json)
    List(ListArgs),
}

/// The backend flags of `baton lock` and `baton task`.
#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// Backend URL [config: backend, default: sqlite://baton.db]
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,

    /// Prefix of every table the backend creates [config: table_prefix, default: baton_]
    #[arg(long, value_name = "PREFIX")]
    pub table_prefix: Option<String>,
}

/// Which locks to take, and how.
#[derive(Debug, Args, Clone)]
pub struct LockOptions {
    /// A lock to hold while CMD runs, such as app:42, tasktype:backup or update (repeatable)
    #[arg(long = "lock", value_name = "NAME", required = true)]
    pub locks: Vec<String>,

    /// How long to wait for the locks, in seconds or as 10s, 5m; 0 gives up at once
    /// [default: wait as long as it takes]
    #[arg(long, value_name = "SECS", value_parser = parse_wait)]
    pub wait: Option<Duration>,

    /// Why, shown to whoever waits: "waiting for <reason> to finish"
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// The lease: how long the locks outlive this process if it is killed
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,

    /// How long CMD may take to exit after SIGTERM before it gets SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
}

/// Flags of `baton lock run`.
#[derive(Debug, Args)]
pub struct LockRunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub locks: LockOptions,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub backend: BackendArgs,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Flags of `baton lock list`.
#[derive(Debug, Args)]
pub struct ListArgs {
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

/// `baton task`: tasks as processes under their locks, with records and logs.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TaskCommand,
}

/// The subcommands of `baton task`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Run a task: wait for its locks, run it with its own log, free them when it exits
    #[command(
        long_about = "Run a task: wait for its locks, run it with its own log, free \
        them when it exits.\n\n\
        The task's number is this process's id. Its record (<dir>/<id>.json) and log \
        (<dir>/<id>.log, also in BATON_TASK_LOG) are kept in the task directory, where `baton \
        task list|show|logs|kill` find them. The task runs in its own process group with \
        BATON_TASK_ID, BATON_TASK_LOG, BATON_FENCING_TOKEN, BATON_BACKEND and \
        BATON_TABLE_PREFIX in its environment, so it can take a lock for part of its life with \
        `baton lock run`. Exit status as for `baton lock run`."
    )]
    Run(TaskRunArgs),
    /// List the tasks of the task directory (a table; JSON with --output json)
    List(TaskListArgs),
    /// Print a task's record (field and value rows on a terminal, else JSON; see --output)
    Show(TaskShowArgs),
    /// Print a task's log, and with --follow what it writes until it ends
    Logs(TaskLogsArgs),
    /// Stop a task: SIGTERM to its process group, SIGKILL after its grace; its locks are freed
    Kill(TaskIdArgs),
}

/// The task directory flag.
#[derive(Debug, Args, Clone)]
pub struct TaskDirArgs {
    /// Where task records and logs are kept
    #[arg(long, value_name = "DIR", default_value = "baton-tasks")]
    pub dir: PathBuf,
}

/// Flags of `baton task run`.
#[derive(Debug, Args)]
pub struct TaskRunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub locks: LockOptions,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub backend: BackendArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: TaskDirArgs,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Flags of `baton task list`.
#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// How to print: `table` (aligned columns, for people) or `json` (for scripts)
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "table")]
    pub output: OutputFormat,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: TaskDirArgs,
}

/// Flags of `baton task show`.
#[derive(Debug, Args)]
pub struct TaskShowArgs {
    /// The task's number
    #[arg(value_name = "ID")]
    pub id: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: TaskDirArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArg,
}

/// Flags of `baton task kill`.
#[derive(Debug, Args)]
pub struct TaskIdArgs {
    /// The task's number
    #[arg(value_name = "ID")]
    pub id: u64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: TaskDirArgs,
}

/// Flags of `baton task logs`.
#[derive(Debug, Args)]
pub struct TaskLogsArgs {
    /// The task's number
    #[arg(value_name = "ID")]
    pub id: u64,

    /// Keep printing what the task writes until it ends
    #[arg(long, short)]
    pub follow: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub dir: TaskDirArgs,
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

impl LockOptions {
    fn names(&self) -> anyhow::Result<Vec<LockName>> {
        self.locks
            .iter()
            .map(|name| task_lock(name).map_err(anyhow::Error::from))
            .collect()
    }

    fn settings(&self) -> anyhow::Result<LockSettings> {
        let settings = LockSettings {
            ttl: self.ttl,
            poll_interval: Duration::from_millis(200).min(self.ttl / 4),
            stop_margin: self.grace + self.ttl / 10,
        };
        settings.validate().with_context(|| {
            format!(
                "--ttl {:?} is too short for --grace {:?}: it must exceed twice the grace plus a fifth",
                self.ttl, self.grace
            )
        })?;
        Ok(settings)
    }

    fn wait(&self) -> Wait {
        match self.wait {
            None => Wait::Forever,
            Some(wait) if wait.is_zero() => Wait::NoWait,
            Some(wait) => Wait::For(wait),
        }
    }
}

/// Parses `--wait`: seconds (`10`, `0.5`) or a duration (`10s`, `5m`).
fn parse_wait(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("{text:?} is not a number of seconds")),
        Err(_) => parse_duration(text),
    }
}

/// Runs a `baton lock` subcommand.
///
/// # Errors
///
/// Bad flags, an unreachable backend, or [`ExitWith`] for the exit status of `run`.
pub async fn run_lock(file: Option<&Path>, args: LockArgs) -> anyhow::Result<()> {
    match args.command {
        LockCommand::Run(args) => lock_run(file, args).await,
        LockCommand::List(args) => {
            let backend = connect(file, &args.backend).await?;
            let holders = backend.holders().await?;
            let format = if args.json {
                OutputFormat::Json
            } else {
                args.output
            };
            output::print(holders.as_slice(), format)
        }
    }
}

async fn connect(
    file: Option<&Path>,
    args: &BackendArgs,
) -> anyhow::Result<std::sync::Arc<dyn Backend>> {
    let config = config::load(file, &args.overrides())?;
    backend::connect(&config.backend, &config.table_prefix).await
}

/// Sets `cancel` once this process is asked to stop (SIGINT, SIGTERM or SIGHUP).
fn cancel_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut signals = Vec::new();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        signals.push(signal(kind).context("cannot listen for signals")?);
    }
    tokio::spawn(async move {
        let mut waits: Vec<_> = signals.iter_mut().map(|s| Box::pin(s.recv())).collect();
        futures::future::select_all(waits.drain(..)).await;
        tx.send_replace(true);
    });
    Ok(rx)
}

async fn lock_run(file: Option<&Path>, args: LockRunArgs) -> anyhow::Result<()> {
    let names = args.locks.names()?;
    let settings = args.locks.settings()?;
    let backend = connect(file, &args.backend).await?;
    let owner = Owner::local();
    let reason = args
        .locks
        .reason
        .clone()
        .unwrap_or_else(|| format!("`{}` on {owner}", args.command.join(" ")));
    let locks = FairLocks::new(backend, owner, settings)?;
    let mut cancel = cancel_on_signals()?;
    let mut on_wait = |blocked: &Blocked| eprintln!("baton: {}", blocked.message());
    let acquired = locks
        .acquire(
            &names,
            &reason,
            args.locks.wait(),
            &mut on_wait,
            &mut cancel,
        )
        .await?;
    let held = match acquired {
        Acquired::Granted(held) => held,
        Acquired::Busy(blocked) => {
            eprintln!(
                "baton: could not take {}: {}",
                join(&names),
                blocked.message()
            );
            return Err(ExitWith(LOCKS_BUSY_EXIT_CODE).into());
        }
        Acquired::Cancelled => return Err(ExitWith(128 + 15).into()),
    };
    let Some((program, arguments)) = args.command.split_first() else {
        bail!("no command to run");
    };
    let spawned = tokio::process::Command::new(program)
        .args(arguments)
        .env(FENCING_TOKEN_ENV, held.token().to_string())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            held.release().await.ok();
            return Err(anyhow::Error::new(error).context(format!("cannot run {program:?}")));
        }
    };
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    let signal_group = |signal: Signal| {
        if let Some(group) = group {
            let _ = killpg(group, signal);
        }
    };
    let mut forwarded = [
        (Signal::SIGINT, signal(SignalKind::interrupt())?),
        (Signal::SIGTERM, signal(SignalKind::terminate())?),
        (Signal::SIGHUP, signal(SignalKind::hangup())?),
    ];
    let [(_, interrupt), (_, terminate), (_, hangup)] = &mut forwarded;
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut sigkill_at = far_future;
    let mut lost = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("cannot wait for the command")?,
            reason = held.lost(), if !lost => {
                eprintln!("baton: {reason}; stopping the command");
                lost = true;
                signal_group(Signal::SIGTERM);
                sigkill_at = Instant::now() + args.locks.grace;
            }
            () = tokio::time::sleep_until(sigkill_at), if lost => {
                eprintln!("baton: the command is still running after {:?}; killing it", args.locks.grace);
                signal_group(Signal::SIGKILL);
                sigkill_at = far_future;
            }
            _ = interrupt.recv() => signal_group(Signal::SIGINT),
            _ = terminate.recv() => signal_group(Signal::SIGTERM),
            _ = hangup.recv() => signal_group(Signal::SIGHUP),
        }
    };
    // What the command left running in its group would run without the locks.
    signal_group(Signal::SIGKILL);
    if let Err(error) = held.release().await {
        eprintln!("baton: could not free the locks: {error}");
    }
    if lost {
        return Err(ExitWith(LOCKS_LOST_EXIT_CODE).into());
    }
    exit_like(
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    )
}

/// Ends like a process that exited with `code` or was ended by `signal`.
fn exit_like(code: Option<i32>, signal: Option<i32>) -> anyhow::Result<()> {
    match (code, signal) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(ExitWith(u8::try_from(code & 0xff).unwrap_or(1)).into()),
        (None, Some(signal)) => {
            Err(ExitWith(u8::try_from(128 + (signal & 0x7f)).unwrap_or(1)).into())
        }
        (None, None) => Err(ExitWith(1).into()),
    }
}

fn join(names: &[LockName]) -> String {
    names
        .iter()
        .map(LockName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// `baton task`

/// A task's record as kept in the task directory: the runner's record, and which process runs
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTask {
    /// The record.
    #[serde(flatten)]
    pub record: TaskRecord,
    /// The `baton task run` process that runs the task.
    pub runner_pid: u32,
    /// The owner of its locks.
    pub owner: String,
}

impl StoredTask {
    /// Whether the record says the task has not ended but its runner is gone.
    pub fn orphaned(&self) -> bool {
        !self.record.state.is_final() && !Path::new(&format!("/proc/{}", self.runner_pid)).exists()
    }
}

/// Runs a `baton task` subcommand.
///
/// # Errors
///
/// Bad flags, an unreachable backend, a missing task, or [`ExitWith`] for the exit status of
/// `run`.
pub async fn run_task(file: Option<&Path>, args: TaskArgs) -> anyhow::Result<()> {
    match args.command {
        TaskCommand::Run(args) => task_run(file, args).await,
        TaskCommand::List(args) => {
            let tasks = stored_tasks(&args.dir)?;
            output::print(tasks.as_slice(), args.output)
        }
        TaskCommand::Show(args) => {
            let task = stored_task(&args.dir.dir, args.id)?;
            output::print(&task, args.output.format())
        }
        TaskCommand::Logs(args) => task_logs(&args).await,
        TaskCommand::Kill(args) => task_kill(&args).await,
    }
}

fn record_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn write_record(dir: &Path, stored: &StoredTask) -> anyhow::Result<()> {
    let path = record_path(dir, stored.record.id.0);
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(stored)?)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The record of task `id` in `dir`.
///
/// # Errors
///
/// No such task, or its record cannot be read.
pub fn stored_task(dir: &Path, id: u64) -> anyhow::Result<StoredTask> {
    let path = record_path(dir, id);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no task {id} in {}", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a task record", path.display()))
}

fn stored_tasks(args: &TaskDirArgs) -> anyhow::Result<Vec<StoredTask>> {
    tasks_in(&args.dir)
}

/// Every task record in `dir`, oldest first; none if `dir` does not exist.
///
/// # Errors
///
/// `dir` or a record in it cannot be read.
pub fn tasks_in(dir: &Path) -> anyhow::Result<Vec<StoredTask>> {
    let mut tasks = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(tasks),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list {}", dir.display()));
        }
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok());
            if let Some(id) = id {
                tasks.push(stored_task(dir, id)?);
            }
        }
    }
    tasks.sort_by_key(|t| (t.record.created_at, t.record.id));
    Ok(tasks)
}

async fn task_run(file: Option<&Path>, args: TaskRunArgs) -> anyhow::Result<()> {
    let names = args.locks.names()?;
    let settings = args.locks.settings()?;
    let config = config::load(file, &args.backend.overrides())?;
    let backend = backend::connect(&config.backend, &config.table_prefix).await?;
    let dir = args.dir.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = u64::from(std::process::id());
    let owner = Owner::local();
    let mut runner_config = RunnerConfig::new(owner.clone(), &dir);
    runner_config.locks = settings;
    runner_config.kill_grace = args.locks.grace;
    runner_config.first_task_id = id;
    runner_config.env = vec![
        ("BATON_BACKEND".to_owned(), config.backend.clone()),
        ("BATON_TABLE_PREFIX".to_owned(), config.table_prefix.clone()),
    ];
    let runner = TaskRunner::new(backend, runner_config)?;
    let Some((program, arguments)) = args.command.split_first() else {
        bail!("no command to run");
    };
    let mut spec = TaskSpec::new(program)
        .args(arguments.iter().cloned())
        .wait(args.locks.wait())
        .log_path(dir.join(format!("{id}.log")));
    if let Some(reason) = &args.locks.reason {
        spec = spec.reason(reason);
    }
    for name in names {
        spec = spec.lock(name);
    }
    let handle = runner.run(spec)?;
    debug_assert_eq!(handle.id(), TaskId(id));
    eprintln!(
        "baton: task {id}, log {}",
        handle.record().log_path.display()
    );
    let store = |record: TaskRecord| {
        write_record(
            &dir,
            &StoredTask {
                record,
                runner_pid: std::process::id(),
                owner: owner.to_string(),
            },
        )
    };
    let mut changes = handle.clone();
    let mut cancel = cancel_on_signals()?;
    let mut told = None;
    store(handle.record())?;
    let record = loop {
        let current = handle.record();
        if current.waiting_for != told {
            if let Some(waiting) = &current.waiting_for {
                eprintln!("baton: {waiting}");
            }
            told.clone_from(&current.waiting_for);
        }
        store(current.clone())?;
        if current.state.is_final() {
            break current;
        }
        tokio::select! {
            _ = changed(&mut changes, &current) => {}
            _ = cancel.wait_for(|c| *c) => {
                runner.kill(handle.id()).await?;
            }
        }
    };
    if let Some(error) = &record.error {
        eprintln!("baton: {error}");
    }
    match (record.state, record.failure) {
        (TaskState::Succeeded, _) => Ok(()),
        (TaskState::Killed, _) => Err(ExitWith(128 + 15).into()),
        (_, Some(Failure::LocksBusy)) => Err(ExitWith(LOCKS_BUSY_EXIT_CODE).into()),
        (_, Some(Failure::LocksLost)) => Err(ExitWith(LOCKS_LOST_EXIT_CODE).into()),
        (_, Some(_)) => Err(ExitWith(1).into()),
        (_, None) => exit_like(record.exit_code, record.signal),
    }
}

/// Resolves once the record of `handle` differs from `seen`.
async fn changed(handle: &mut baton_tasklocks::TaskHandle, seen: &TaskRecord) {
    handle.wait_until(|r| r != seen).await;
}

async fn task_logs(args: &TaskLogsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let task = stored_task(&args.dir.dir, args.id)?;
    let mut printed = 0;
    loop {
        let bytes = std::fs::read(&task.record.log_path).unwrap_or_default();
        if bytes.len() > printed {
            std::io::stdout().write_all(&bytes[printed..])?;
            std::io::stdout().flush()?;
            printed = bytes.len();
        }
        if !args.follow {
            return Ok(());
        }
        let now = stored_task(&args.dir.dir, args.id)?;
        if now.record.state.is_final() || now.orphaned() {
            let bytes = std::fs::read(&task.record.log_path).unwrap_or_default();
            if bytes.len() > printed {
                std::io::stdout().write_all(&bytes[printed..])?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn task_kill(args: &TaskIdArgs) -> anyhow::Result<()> {
    let task = stored_task(&args.dir.dir, args.id)?;
    if task.record.state.is_final() {
        println!("task {} already ended: {}", args.id, task.record.state);
        return Ok(());
    }
    let runner = Pid::from_raw(i32::try_from(task.runner_pid)?);
    if task.orphaned() {
        if let Some(pid) = task.record.pid {
            let _ = killpg(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL);
        }
        println!(
            "task {}: its runner is gone; killed its process group",
            args.id
        );
        return Ok(());
    }
    nix::sys::signal::kill(runner, Signal::SIGTERM)
        .with_context(|| format!("cannot signal the runner of task {}", args.id))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = stored_task(&args.dir.dir, args.id)?;
        if now.record.state.is_final() || now.orphaned() {
            println!("task {}: {}", args.id, now.record.state);
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("task {} did not end within 120s", args.id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_seconds_or_durations() {
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert_eq!(parse_wait("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_wait("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_wait("-1").is_err());
        assert!(parse_wait("soon").is_err());
    }

    #[test]
    fn exit_status_follows_the_command() {
        assert!(exit_like(Some(0), None).is_ok());
        let code = |r: anyhow::Result<()>| r.unwrap_err().downcast::<ExitWith>().ok();
        assert_eq!(code(exit_like(Some(3), None)), Some(ExitWith(3)));
        assert_eq!(code(exit_like(None, Some(9))), Some(ExitWith(137)));
    }
}
