//! `baton bench`: measures a backend in-process, one JSON line per [`Figure`].
//!
//! Each figure is a [`Scenario`]; to add one, add a variant, its function, and its place in
//! [`Scenario::ALL`]. Every run uses fresh queue and lock names (`bench-<pid>-<nanos>-…`), so
//! repeated runs against a persistent backend never mix, and drains the jobs it enqueued so that
//! none is left pending.

mod broker;
mod lock;
mod queue;
mod sync;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use baton_core::{Backend, LockName, Owner, QueueName};
use serde::{Deserialize, Serialize};

use crate::backend::{self, redact};
use crate::cli::BenchArgs;
use crate::output::ProgressTarget;

/// What to measure, and how hard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchSettings {
    /// The backend URL.
    pub backend: String,
    /// The backend's table prefix.
    pub table_prefix: String,
    /// Jobs per enqueue and end-to-end figure.
    pub jobs: u64,
    /// Concurrent workers in the end-to-end figure (and in the drains after enqueue figures).
    pub workers: u32,
    /// Jobs per `enqueue_batch` call.
    pub batch: usize,
    /// Lock acquire+release pairs in the lock figure, in all.
    pub lock_ops: u64,
    /// Concurrent tasks in the lock figure, each on its own lock name.
    pub lock_tasks: u32,
    /// Jobs each end-to-end worker reserves per call; it completes them one by one.
    pub prefetch: usize,
    /// The figures to measure, in the order of [`Scenario::ALL`].
    pub scenarios: Vec<Scenario>,
    /// The end-to-end figure's queue, kept between runs; a fresh one when `None`.
    pub queue: Option<String>,
    /// Pending jobs the end-to-end queue is topped up to before the figure.
    pub backlog_pending: u64,
    /// Finished jobs the end-to-end queue is topped up to before the figure.
    pub backlog_finished: u64,
}

impl BenchSettings {
    /// The settings of `args`, measuring `backend`.
    pub fn from_args(backend: &str, table_prefix: &str, args: &BenchArgs) -> Self {
        Self {
            backend: backend.to_owned(),
            table_prefix: table_prefix.to_owned(),
            jobs: args.jobs,
            workers: args.workers,
            batch: args.batch,
            lock_ops: args.lock_ops,
            lock_tasks: args.lock_tasks,
            prefetch: usize::try_from(args.prefetch).unwrap_or(1),
            scenarios: Scenario::ALL
                .into_iter()
                .filter(|scenario| {
                    (args.only.is_empty() && scenario.runs_by_default())
                        || args.only.contains(scenario)
                })
                .collect(),
            queue: args.queue.clone(),
            backlog_pending: args.backlog_pending,
            backlog_finished: args.backlog_finished,
        }
    }
}

/// One measured figure, printed as one JSON line. Fields that do not apply are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured: `enqueue`, `end_to_end`, `lock`.
    pub bench: String,
    /// The variant measured, such as `single` or `batch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The backend URL, its password hidden.
    pub backend: String,
    /// Jobs enqueued or run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// Jobs per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// Concurrent workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// Jobs the backend counted as succeeded when the clock stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// Operations measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<u64>,
    /// Concurrent tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u32>,
    /// Jobs each worker reserved per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// Pending jobs of the queue, besides the figure's own, while it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_pending: Option<u64>,
    /// Finished jobs of the queue when the figure started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_finished: Option<u64>,
    /// Wall-clock seconds the figure took.
    pub seconds: f64,
    /// Operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// Jobs completed per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_per_second: Option<f64>,
    /// Median latency of one operation, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    /// 99th-percentile latency of one operation, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
}

/// The figures `baton bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Enqueue jobs one call at a time, from one task.
    EnqueueSingle,
    /// Enqueue jobs `batch` at a time, from one task.
    EnqueueBatch,
    /// Reserve and complete jobs enqueued beforehand, with `workers` concurrent workers.
    EndToEnd,
    /// Acquire and release locks, each of `lock_tasks` tasks on its own name.
    Lock,
    /// Time for a sync pool of 1,000 accounts to rebalance when a fourth manager joins three.
    RebalanceJoin,
    /// Time for a sync pool of 1,000 accounts to be whole again when one of four managers
    /// crashes.
    RebalanceCrash,
    /// Run `jobs` empty jobs through a work pool with a cluster-wide limit of 32.
    Workpool,
    /// Run `jobs` empty jobs through a broker on loopback to `workers` worker connections.
    Broker,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Self; 8] = [
        Self::EnqueueSingle,
        Self::EnqueueBatch,
        Self::EndToEnd,
        Self::Lock,
        Self::RebalanceJoin,
        Self::RebalanceCrash,
        Self::Workpool,
        Self::Broker,
    ];

    /// Whether the scenario runs when no `--only` is given: the rebalance, work-pool and
    /// broker figures run only when asked for.
    pub fn runs_by_default(self) -> bool {
        !matches!(
            self,
            Self::RebalanceJoin | Self::RebalanceCrash | Self::Workpool | Self::Broker
        )
    }

    /// The scenario's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::EnqueueSingle => "enqueue single",
            Self::EnqueueBatch => "enqueue batch",
            Self::EndToEnd => "end to end",
            Self::Lock => "lock",
            Self::RebalanceJoin => "rebalance join",
            Self::RebalanceCrash => "rebalance crash",
            Self::Workpool => "workpool",
            Self::Broker => "broker",
        }
    }

    /// Measures this scenario.
    ///
    /// # Errors
    ///
    /// The backend failed, or did not end up in the state the scenario expects.
    pub async fn run(self, bench: &Bench) -> anyhow::Result<Figure> {
        match self {
            Self::EnqueueSingle => queue::enqueue_single(bench).await,
            Self::EnqueueBatch => queue::enqueue_batch(bench).await,
            Self::EndToEnd => queue::end_to_end(bench).await,
            Self::Lock => lock::acquire_release(bench).await,
            Self::Broker => broker::through_broker(bench).await,
            Self::RebalanceJoin => sync::join(bench).await,
            Self::RebalanceCrash => sync::crash(bench).await,
            Self::Workpool => {
                let jobs = bench.settings.jobs;
                let run =
                    crate::bench_pool::run(bench.backend.clone(), &bench.run_id, jobs).await?;
                let mut figure = bench.figure("workpool", run.elapsed);
                figure.jobs = Some(run.jobs);
                figure.workers = Some(crate::bench_pool::MAX_PARALLELISM as u32);
                figure.jobs_per_second = Some(rate(run.jobs, run.elapsed));
                Ok(figure)
            }
        }
    }
}

/// A benchmark run: the backend, the settings, and the prefix of every name it uses.
pub struct Bench {
    backend: Arc<dyn Backend>,
    settings: BenchSettings,
    run_id: String,
}

impl Bench {
    /// A run against `backend` with `settings`, its names unique to this process and moment.
    pub fn new(backend: Arc<dyn Backend>, settings: BenchSettings) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        Self {
            backend,
            settings,
            run_id: format!("bench-{}-{nanos}", std::process::id()),
        }
    }

    /// A figure named `bench` for this run's backend, the rest to be filled in.
    fn figure(&self, bench: &str, seconds: Duration) -> Figure {
        Figure {
            bench: bench.to_owned(),
            backend: redact(&self.settings.backend),
            seconds: round(seconds.as_secs_f64(), 6),
            ..Figure::default()
        }
    }

    /// A queue name unique to this run and `purpose`.
    fn queue(&self, purpose: &str) -> anyhow::Result<QueueName> {
        Ok(QueueName::new(format!("{}-{purpose}", self.run_id))?)
    }

    /// A lock name unique to this run and `purpose`.
    fn lock_name(&self, purpose: &str) -> anyhow::Result<LockName> {
        Ok(LockName::new(format!("{}-{purpose}", self.run_id))?)
    }

    /// An owner name for this process's task `purpose`.
    fn owner(&self, purpose: &str) -> anyhow::Result<Owner> {
        Ok(Owner::new(format!("{}-{purpose}", Owner::local()))?)
    }
}

/// Opens `settings.backend` and writes one JSON line per scenario to `out`, each as soon as it
/// is measured, with a spinner on `progress` while each one is.
///
/// # Errors
///
/// The backend cannot be opened, a scenario fails, or `out` cannot be written.
pub async fn run(
    settings: &BenchSettings,
    out: &mut impl Write,
    progress: ProgressTarget,
) -> anyhow::Result<()> {
    let backend = backend::connect(&settings.backend, &settings.table_prefix).await?;
    let bench = Bench::new(backend, settings.clone());
    for &scenario in &settings.scenarios {
        let spinner = progress.spinner(format!("measuring {}", scenario.name()));
        let figure = scenario.run(&bench).await;
        spinner.finish_and_clear();
        let figure = figure.with_context(|| format!("bench {} failed", scenario.name()))?;
        let line = serde_json::to_string(&figure)?;
        writeln!(out, "{line}").context("cannot write the bench output")?;
        out.flush().context("cannot write the bench output")?;
    }
    Ok(())
}

/// How many operations per second `ops` in `elapsed` make.
fn rate(ops: u64, elapsed: Duration) -> f64 {
    round(ops as f64 / elapsed.as_secs_f64().max(1e-9), 1)
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
