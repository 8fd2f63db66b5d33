//! `baton bench --master-failover MODE`: how long a cluster goes without a master when the
//! master's machine dies.
//!
//! Each run starts `instances` processes of `baton master run` on the backend, each in a process
//! group of its own, running a command that prints `started <token>`. Each round SIGKILLs the
//! leader's whole group (the instance and its command, as a crash would), times how long until
//! another instance's command prints `started`, and starts a replacement instance so that the
//! next round has as many candidates. A last round sends SIGTERM instead (a clean shutdown,
//! which releases the lease at once). One JSON line per mode.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use baton_master::MasterSettings;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::backend::redact;
use crate::output::ProgressTarget;

/// The timings a failover run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailoverMode {
    /// The seed's defaults: 8 s heartbeat, 3 retries, so a 32 s lease.
    Default,
    /// A 2 s lease renewed every 500 ms.
    Tight,
}

impl FailoverMode {
    /// The mode's name, as in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Tight => "tight",
        }
    }

    /// The settings of the mode.
    pub fn settings(self) -> MasterSettings {
        match self {
            Self::Default => MasterSettings::default(),
            Self::Tight => MasterSettings {
                heartbeat_interval: Duration::from_millis(500),
                lease: Some(Duration::from_secs(2)),
                ..MasterSettings::default()
            },
        }
    }
}

/// What to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverSettings {
    /// The backend URL.
    pub backend: String,
    /// The backend's table prefix.
    pub table_prefix: String,
    /// The timings to measure, one JSON line each.
    pub modes: Vec<FailoverMode>,
    /// Kills per mode.
    pub rounds: u32,
    /// Instances competing.
    pub instances: u32,
}

/// One mode's figures, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailoverFigure {
    /// Always `master_failover`.
    pub bench: &'static str,
    /// `default` or `tight`.
    pub mode: &'static str,
    /// The backend URL, its password hidden.
    pub backend: String,
    /// The master's lease, in milliseconds.
    pub lease_ms: u64,
    /// How often it is renewed, in milliseconds.
    pub heartbeat_ms: u64,
    /// Instances competing.
    pub instances: u32,
    /// Each round's time from SIGKILL of the master to `start` on the next, in milliseconds.
    pub failover_ms: Vec<u64>,
    /// The median of those.
    pub p50_ms: u64,
    /// The longest of those.
    pub max_ms: u64,
    /// The time from SIGTERM of the master (a clean shutdown) to `start` on the next.
    pub clean_handover_ms: u64,
    /// Wall-clock seconds the mode took.
    pub seconds: f64,
}

/// Runs every mode of `settings`, writing one JSON line per mode to `out`, with a spinner on
/// `progress` while each one is measured.
///
/// # Errors
///
/// An instance cannot be started, or no instance takes over within twice the lease plus 10 s.
pub async fn run(
    settings: &FailoverSettings,
    out: &mut impl Write,
    progress: ProgressTarget,
) -> anyhow::Result<()> {
    for mode in &settings.modes {
        let spinner = progress.spinner(format!("measuring master failover ({})", mode.name()));
        let figure = measure(settings, *mode).await;
        spinner.finish_and_clear();
        let figure = figure?;
        writeln!(out, "{}", serde_json::to_string(&figure)?).context("cannot write the figure")?;
        out.flush().context("cannot write the figure")?;
    }
    Ok(())
}

async fn measure(
    settings: &FailoverSettings,
    mode: FailoverMode,
) -> anyhow::Result<FailoverFigure> {
    let timings = mode.settings();
    timings.validate()?;
    let lease = timings.effective_lease();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut cluster = Cluster {
        settings: settings.clone(),
        timings,
        name: format!("bench-{}-{nanos}-{}", std::process::id(), mode.name()),
        children: Vec::new(),
        started: mpsc::unbounded_channel(),
    };
    let began = Instant::now();
    for _ in 0..settings.instances.max(2) {
        cluster.spawn()?;
    }
    let patience = lease * 2 + Duration::from_secs(10);
    let mut leader = cluster.next_start(timings.init_delay + patience).await?;
    let mut failovers = Vec::new();
    for round in 0..settings.rounds {
        cluster.crash(leader.0);
        let killed = Instant::now();
        let next = cluster.next_start(patience).await?;
        if next.1 <= leader.1 {
            bail!(
                "round {round}: token {} did not grow past {}",
                next.1,
                leader.1
            );
        }
        failovers
            .push(u64::try_from(next.2.duration_since(killed).as_millis()).unwrap_or(u64::MAX));
        leader = next;
        cluster.spawn()?;
    }
    cluster.terminate(leader.0);
    let terminated = Instant::now();
    let next = cluster.next_start(patience).await?;
    let clean_handover_ms = millis(next.2.duration_since(terminated));
    let seconds = began.elapsed().as_secs_f64();
    cluster.crash_all();
    let mut sorted = failovers.clone();
    sorted.sort_unstable();
    Ok(FailoverFigure {
        bench: "master_failover",
        mode: mode.name(),
        backend: redact(&settings.backend),
        lease_ms: millis(lease),
        heartbeat_ms: millis(timings.heartbeat_interval),
        instances: settings.instances.max(2),
        p50_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        max_ms: sorted.last().copied().unwrap_or(0),
        clean_handover_ms,
        failover_ms: failovers,
        seconds: (seconds * 1000.0).round() / 1000.0,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A `started` line: which instance, its token, and when it was read.
type Started = (usize, u64, Instant);

struct Cluster {
    settings: FailoverSettings,
    timings: MasterSettings,
    name: String,
    children: Vec<Option<Child>>,
    started: (
        mpsc::UnboundedSender<Started>,
        mpsc::UnboundedReceiver<Started>,
    ),
}

impl Cluster {
    /// Starts one more `baton master run` instance in a process group of its own.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let index = self.children.len();
        let exe = std::env::current_exe().context("cannot find the baton binary")?;
        let ms = |duration: Duration| format!("{}ms", duration.as_millis());
        let mut command = Command::new(exe);
        command
            .args(["master", "run", "--name", &self.name, "--grace", "1s"])
            .args(["--backend", &self.settings.backend])
            .args(["--table-prefix", &self.settings.table_prefix])
            .args(["--init-delay", "0ms"])
            .args(["--heartbeat-interval", &ms(self.timings.heartbeat_interval)])
            .args(["--lease", &ms(self.timings.effective_lease())])
            .args([
                "--check-master-interval",
                &ms(self.timings.check_master_interval),
            ])
            .args([
                "--",
                "sh",
                "-c",
                "echo \"started $BATON_FENCING_TOKEN\"; exec sleep 100000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot start an instance")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let started = self.started.0.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let token = line
                    .strip_prefix("started ")
                    .and_then(|token| token.trim().parse().ok());
                if let Some(token) = token
                    && started.send((index, token, Instant::now())).is_err()
                {
                    break;
                }
            }
        });
        self.children.push(Some(child));
        Ok(())
    }

    async fn next_start(&mut self, within: Duration) -> anyhow::Result<Started> {
        match tokio::time::timeout(within, self.started.1.recv()).await {
            Ok(Some(started)) => Ok(started),
            Ok(None) => bail!("every instance is gone"),
            Err(_) => bail!("no instance became master within {within:?}"),
        }
    }

    /// SIGKILLs instance `index` and its command.
    fn crash(&mut self, index: usize) {
        if let Some(child) = self.children.get_mut(index).and_then(Option::take)
            && let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok())
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Sends SIGTERM to instance `index` alone: it stops its command and releases the lease.
    fn terminate(&mut self, index: usize) {
        if let Some(pid) = self
            .children
            .get(index)
            .and_then(Option::as_ref)
            .and_then(Child::id)
            .and_then(|pid| i32::try_from(pid).ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    fn crash_all(&mut self) {
        for index in 0..self.children.len() {
            self.crash(index);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.crash_all();
    }
}
