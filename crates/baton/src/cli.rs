//! The command line, as clap derive types. Every flag that is also a configuration key is an
//! `Option`, so that an absent flag leaves the value to the file, the environment or the default
//! (see [`crate::config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_core::{JobId, MAX_BATCH};
use clap::{Args, Parser, Subcommand};

use crate::bench::Scenario;
use crate::config::ConfigOverrides;
use crate::output::OutputFormat;

/// `baton`: run and drive the Baton job-orchestration platform.
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Run and drive Baton, the job-orchestration platform",
    long_about = "Run and drive Baton, the job-orchestration platform.\n\n\
        Settings come from, in rising precedence: built-in defaults, the TOML file given by \
        --config (or ./baton.toml if it exists), BATON_* environment variables (BATON_BACKEND, \
        BATON_LISTEN, BATON_SERVER, BATON_RETENTION), and command-line flags.\n\n\
        Log output goes to standard error and is filtered by RUST_LOG (e.g. RUST_LOG=debug).\n\n\
        Exit status: 0 on success; 1 when the command failed (the reason is on standard error); \
        2 for a usage error. `lock run` and `task run` end with their command's status (128 + N \
        when it died of signal N), 75 when the locks stayed busy and 76 when they were lost while \
        it ran."
)]
pub struct Cli {
    /// Configuration file in TOML [default: ./baton.toml if it exists]
    #[arg(long, global = true, env = "BATON_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `baton`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the maintenance loop on the configured backend
    #[command(
        long_about = "Run the HTTP API and the maintenance loop on the configured backend.\n\n\
        The API answers under /api/v1 (jobs, queues), /healthz (up) and /readyz (the backend \
        answers). Every second the maintenance \
        loop hands out again the jobs whose worker lease expired and deletes finished jobs older \
        than the retention. SIGINT or SIGTERM shuts the server down gracefully."
    )]
    Serve(ServeArgs),
    /// Enqueue a job through a running server and print its id
    #[command(
        long_about = "Enqueue a job through a running server and print its id.\n\n\
        Example: baton enqueue --queue emails --priority 5 --delay 10s '{\"to\": \"a@example.com\"}'"
    )]
    Enqueue(EnqueueArgs),
    /// Print a job, its state and its attempts (a table on a terminal, else JSON; see --output)
    #[command(long_about = "Print a job, its state and its attempts.\n\n\
        On a terminal: field and value rows, then one row per attempt. Otherwise, or with \
        --output json: the job as JSON, as GET /api/v1/jobs/{id} answers it.")]
    Job(JobArgs),
    /// Print a page of jobs, newest first, with the `before` of the next page (see --output)
    #[command(
        long_about = "Print a page of jobs, newest first, with the `before` of the next \
        page.\n\n\
        On a terminal: one row per job (id, queue, state, attempts, created, run_at) and the \
        --before of the next page. Otherwise, or with --output json: the page as JSON, as GET \
        /api/v1/jobs answers it."
    )]
    Jobs(JobsArgs),
    /// Cancel a job: a pending one never runs, a running one's completion is refused
    Cancel(JobArgs),
    /// Run a failed or canceled job again, due now, with at least one more attempt
    Retry(JobArgs),
    /// Print how many jobs of a queue are in each state (see --output)
    #[command(long_about = "Print how many jobs of a queue are in each state.\n\n\
        On a terminal: one state and count row per state. Otherwise, or with --output json: \
        the counts as JSON, as GET /api/v1/queues/{queue}/counts answers them.")]
    Counts(CountsArgs),
    /// Pause a queue: its jobs wait, not handed to workers, until it is resumed
    Pause(CountsArgs),
    /// Print the workers connected to the server's broker (see --output)
    #[command(long_about = "Print the workers connected to the server's broker.\n\n\
        On a terminal: one row per worker (name, queue, state, job, last seen). Otherwise, or \
        with --output json: the list as JSON, as GET /api/v1/workers answers it.")]
    Workers(WorkersArgs),
    /// Resume a paused queue
    Resume(CountsArgs),
    /// Measure a backend in-process and print one JSON line per figure
    #[command(
        long_about = "Measure a backend in-process and print one JSON line per figure.\n\n\
        The figures are: enqueue one job per call, enqueue in batches, end to end (jobs enqueued \
        beforehand, then reserved and completed by concurrent workers until the backend counts \
        them all as succeeded) and lock acquire+release latency. The benchmark talks to the \
        backend directly, not through a server, and uses fresh queue and lock names each run."
    )]
    Bench(BenchArgs),
    /// Run a command on exactly one instance of a cluster; disable, enable and list masters
    Master(crate::master::MasterArgs),
    /// Run a command while holding named locks (a distributed flock), and list held locks
    Lock(crate::tasks::LockArgs),
    /// Run tasks as processes under their locks; list, show, follow and kill them
    Task(crate::tasks::TaskArgs),
    /// Print the effective configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a command for each job of a broker queue (the job as JSON on its stdin)
    #[command(
        long_about = "Run a command for each job of a broker queue.\n\n        The job (its fields, job_id, token, attempt, timeout) arrives as JSON on the command's \
        stdin, with BATON_JOB_ID and BATON_FENCING_TOKEN in its environment. Exit status 0 \
        succeeds the job with the command's stdout as its result (JSON if it parses, else \
        text); any other status fails it with the exit code and stderr. SIGINT or SIGTERM lets \
        running jobs finish and leaves.\n\n        Example: baton worker --queue images --concurrency 4 -- ./resize.sh"
    )]
    Worker(crate::broker::WorkerArgs),
    /// Wait for a job to end, through the broker, and print it
    Wait(crate::broker::WaitArgs),
}

/// The subcommands of `baton config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting's effective value and where it came from
    #[command(
        long_about = "Print every setting's effective value and where it came from: default, \
        the configuration file, a BATON_* environment variable or a flag, one `key = value  # \
        source` line each (with --output json: a JSON array of key, value and source). The flags are those of `baton serve`. \
        The configuration is checked as at start-up: an unknown key or an invalid value is an \
        error naming it."
    )]
    Show(ConfigShowArgs),
}

/// Flags of `baton config show`.
#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    /// The flags `baton serve` takes, applied on top as it would.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// How to print: `table` (one `key = value  # source` line per setting) or `json`
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// Flags of `baton serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Backend URL: sqlite://PATH, postgres://…, mysql://…, redis://… or memory://
    /// [config: backend, default: sqlite://baton.db]
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,

    /// Prefix of every table the backend creates [config: table_prefix, default: baton_]
    #[arg(long, value_name = "PREFIX")]
    pub table_prefix: Option<String>,

    /// Address to serve the HTTP API on [config: listen, default: 127.0.0.1:7600]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// How long finished jobs are kept before they are deleted, e.g. 7d or 12h [config: retention]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retention: Option<Duration>,
}

/// The `--server` flag of the commands that talk to a running server.
#[derive(Debug, Args)]
pub struct ServerArg {
    /// Base URL of the baton server [config: server, default: http://127.0.0.1:7600]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// The `--output` flag of the commands that print what they read.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArg {
    /// How to print: `table` (aligned columns, for people) or `json` (for scripts)
    /// [default: table when standard output is a terminal, json otherwise]
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub output: Option<OutputFormat>,
}

impl OutputArg {
    /// The format asked for, or the one that suits standard output.
    pub fn format(self) -> OutputFormat {
        self.output.unwrap_or_else(OutputFormat::for_stdout)
    }
}

/// Flags of `baton enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Queue to put the job on
    #[arg(long, short, value_name = "QUEUE")]
    pub queue: String,

    /// Priority: among due jobs, higher runs first [default: 0]
    #[arg(long, short, allow_negative_numbers = true, value_name = "N")]
    pub priority: Option<i32>,

    /// Run the job no earlier than this long from now, e.g. 10s, 5m, 1h30m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// Attempts in all, the first included; 1 means never retry [default: 20]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,

    /// The job's payload as JSON, or `-` to read it from standard input
    #[arg(
        value_name = "PAYLOAD_JSON",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub payload: Option<String>,

    /// Enqueue one job per line of this file (`-`: standard input), each line a payload in
    /// JSON, the other flags applying to all; every line is checked before any is sent
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArg,
}

/// Flags of `baton jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only this queue's jobs
    #[arg(long, short, value_name = "QUEUE")]
    pub queue: Option<String>,

    /// Only jobs in this state: pending, running, succeeded, failed or canceled
    #[arg(long, short, value_name = "STATE")]
    pub state: Option<String>,

    /// Only jobs older than this id (the `next` of the page before)
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,

    /// The most jobs to print, 1 to 500
    #[arg(long, short, default_value_t = 50, value_name = "N")]
    pub limit: usize,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArg,
}

/// Flags of `baton job` and `baton cancel`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job's id, as printed by `baton enqueue`
    #[arg(value_name = "ID", value_parser = parse_job_id)]
    pub id: JobId,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArg,
}

/// Flags of `baton counts`.
#[derive(Debug, Args)]
pub struct CountsArgs {
    /// The queue to count
    #[arg(long, short, value_name = "QUEUE")]
    pub queue: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArg,
}

/// Flags of `baton workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArg,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArg,
}

/// Flags of `baton bench`.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Backend URL to measure [config: backend, default: sqlite://baton.db]
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,

    /// Jobs per enqueue and end-to-end figure
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,

    /// Concurrent workers in the end-to-end figure
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub workers: u32,

    /// Jobs per enqueue_batch call
    #[arg(long, default_value_t = 100, value_parser = parse_batch)]
    pub batch: usize,

    /// Lock acquire+release pairs in the lock figure, shared among the lock tasks
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_ops: u64,

    /// Concurrent tasks in the lock figure, each on its own lock name
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub lock_tasks: u32,

    /// Jobs each end-to-end worker reserves per call (it completes them one by one)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub prefetch: u64,

    /// Measure only this figure (repeat for several); all of them when not given
    #[arg(long, value_name = "FIGURE")]
    pub only: Vec<Scenario>,

    /// Run the end-to-end figure on this queue, kept between runs, instead of a fresh one
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,

    /// Before the end-to-end figure, top its queue up to this many pending jobs, which stay
    /// behind it: the figure's jobs go through a queue this deep
    #[arg(long, value_name = "JOBS", default_value_t = 0)]
    pub backlog_pending: u64,

    /// Before the end-to-end figure, top its queue up to this many finished jobs
    #[arg(long, value_name = "JOBS", default_value_t = 0)]
    pub backlog_finished: u64,

    /// Measure master failover instead (repeat for both): SIGKILL the master's process and time
    /// until the next instance starts, with the default or a tight (2 s lease) timing
    #[arg(long, value_name = "MODE")]
    pub master_failover: Vec<crate::bench_master::FailoverMode>,

    /// Kills per master-failover mode
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub master_rounds: u32,

    /// Instances competing in the master-failover figure
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=32))]
    pub master_instances: u32,
}

impl ServeArgs {
    /// The configuration keys these flags set.
    pub fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            backend: self.backend.clone(),
            table_prefix: self.table_prefix.clone(),
            listen: self.listen,
            retention: self.retention,
            ..ConfigOverrides::default()
        }
    }
}

impl ServerArg {
    /// The configuration keys these flags set.
    pub fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            server: self.server.clone(),
            ..ConfigOverrides::default()
        }
    }
}

impl BenchArgs {
    /// The configuration keys these flags set.
    pub fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            backend: self.backend.clone(),
            ..ConfigOverrides::default()
        }
    }
}

/// Parses a human duration such as `10s`, `5m` or `1h 30m`.
///
/// # Errors
///
/// A message saying what is wrong with `text`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 10s, 5m or 1h30m: {e}"))
}

fn parse_job_id(text: &str) -> Result<JobId, String> {
    text.parse::<JobId>().map_err(|e| e.to_string())
}

fn parse_batch(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(n),
        _ => Err(format!("batch must be a number from 1 to {MAX_BATCH}")),
    }
}
