//! The master executor across real processes on every durable backend: three instances, one
//! master; a SIGKILLed master replaced within its lease; a SIGSTOPped master that, once
//! resumed, does not act again and has its token refused; disable and enable across instances
//! and restarts.
//!
//! This binary is its own child: run with `BATON_MASTER_PROBE_URL` set, it is a probe, one
//! instance running an executor and printing what happens to it, one line per event. Without
//! it, it runs the scenarios on SQLite (a temporary file), PostgreSQL, MariaDB/MySQL and Redis,
//! whose URLs come from `BATON_TEST_POSTGRES_URL`, `BATON_TEST_MYSQL_URL` and
//! `BATON_TEST_REDIS_URL` (missing ones fail).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use baton_core::{Backend, FencingToken, Owner};
use baton_master::{
    Leadership, MasterControl, MasterEvent, MasterExecutor, MasterName, MasterOptions,
    MasterSettings, StopCause, job_fn,
};
use baton_testservers::{Durable, Runner, durable_backends, fresh_prefix, process_prefix};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PROBE_URL: &str = "BATON_MASTER_PROBE_URL";
const PROBE_PREFIX: &str = "BATON_MASTER_PROBE_PREFIX";
const PROBE_NAME: &str = "BATON_MASTER_PROBE_NAME";
const PROBE_LEASE_MS: &str = "BATON_MASTER_PROBE_LEASE_MS";

/// The lease of every probe; renewed every fifth of it.
const LEASE: Duration = Duration::from_millis(2000);
/// How long a probe may take to connect, migrate and compete.
const STARTUP: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(url) = std::env::var(PROBE_URL) {
        runtime.block_on(probe(url));
        return ExitCode::SUCCESS;
    }
    let mut runner = Runner::from_args();
    let backends = durable_backends("master");
    for backend in &backends {
        for (scenario, run) in SCENARIOS {
            let backend = backend.clone();
            runner.run(&format!("{}::{scenario}", backend.kind), || {
                runtime.block_on(run(backend));
            });
        }
    }
    runtime.block_on(baton_testservers::drop_all(&backends, &process_prefix(TAG)));
    runner.finish()
}

type Scenario = fn(Durable) -> std::pin::Pin<Box<dyn Future<Output = ()>>>;

const SCENARIOS: [(&str, Scenario); 3] = [
    (
        "three_instances_one_master_and_a_killed_master_is_replaced_within_its_lease",
        |backend| Box::pin(killed_master_is_replaced_within_its_lease(backend)),
    ),
    (
        "a_paused_master_does_not_act_again_and_its_token_is_refused",
        |backend| Box::pin(paused_master_does_not_act_again(backend)),
    ),
    (
        "disable_and_enable_hold_across_instances_and_restarts",
        |backend| Box::pin(disable_and_enable_across_instances_and_restarts(backend)),
    ),
];

/// The tag of this binary's table and key prefixes.
const TAG: &str = "tm";

/// Opens the backend at `url` on tables named with `prefix`.
async fn connect(url: &str, prefix: &str) -> Arc<dyn Backend> {
    baton_testservers::connect_with(url, prefix, 4).await
}

// ---------------------------------------------------------------------------------------------
// The probe: one instance, printing what happens to it.

async fn probe(url: String) {
    let prefix = std::env::var(PROBE_PREFIX).unwrap();
    let name = MasterName::new(std::env::var(PROBE_NAME).unwrap()).unwrap();
    let lease_ms: u64 = std::env::var(PROBE_LEASE_MS).unwrap().parse().unwrap();
    let backend = connect(&url, &prefix).await;
    let settings = MasterSettings {
        init_delay: Duration::ZERO,
        heartbeat_interval: Duration::from_millis(lease_ms / 5),
        lease: Some(Duration::from_millis(lease_ms)),
        ..MasterSettings::default()
    };
    let job = job_fn(
        |leadership: Leadership| async move {
            let token = leadership.token();
            println!("start token={token}");
            tokio::spawn(async move {
                // Act every 50 ms for as long as the leadership says it is current.
                while leadership.is_current() {
                    println!("act token={token}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        },
        |token: FencingToken, cause: StopCause| async move {
            println!("stop token={token} cause={}", cause.kind());
        },
    );
    let options = MasterOptions::new(name).with_settings(settings);
    let executor = MasterExecutor::start(backend, options, job).unwrap();
    println!("owner {}", executor.owner());
    let mut events = executor.events();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(MasterEvent::Elected { token }) => println!("event elected token={token}"),
                Ok(MasterEvent::TokenRejected { token }) => println!("event token-rejected token={token}"),
                Ok(MasterEvent::Disabled(disabled)) => println!("event disabled reason={}", disabled.reason),
                Ok(MasterEvent::Enabled) => println!("event enabled"),
                Ok(MasterEvent::Stopped { token, cause }) => println!("event stopped token={token} cause={}", cause.kind()),
                Ok(_) => {}
                Err(_) => break,
            },
            _ = terminate.recv() => break,
        }
    }
    executor.shutdown().await;
    println!("exited");
}

// ---------------------------------------------------------------------------------------------
// The parent's side: probes as child processes, and their lines.

/// One line a probe printed, when the parent read it.
#[derive(Debug, Clone)]
struct Line {
    probe: usize,
    at: Instant,
    text: String,
}

impl Line {
    /// The token in a `… token=N …` line.
    fn token(&self) -> Option<u64> {
        self.text
            .split_whitespace()
            .find_map(|word| word.strip_prefix("token="))
            .and_then(|token| token.parse().ok())
    }
}

struct Cluster {
    url: String,
    prefix: String,
    name: String,
    children: HashMap<usize, Child>,
    next_id: usize,
    lines_tx: mpsc::UnboundedSender<Line>,
    lines: mpsc::UnboundedReceiver<Line>,
    /// Every line read so far, in order.
    seen: Vec<Line>,
}

impl Cluster {
    fn new(backend: &Durable) -> Self {
        let (lines_tx, lines) = mpsc::unbounded_channel();
        Self {
            url: backend.url.clone(),
            prefix: fresh_prefix(TAG),
            name: "JOB-SCHEDULER".to_owned(),
            children: HashMap::new(),
            next_id: 0,
            lines_tx,
            lines,
            seen: Vec::new(),
        }
    }

    /// Starts a probe; returns its id.
    fn spawn(&mut self) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(PROBE_URL, &self.url)
            .env(PROBE_PREFIX, &self.prefix)
            .env(PROBE_NAME, &self.name)
            .env(PROBE_LEASE_MS, LEASE.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = self.lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(text)) = reader.next_line().await {
                let line = Line {
                    probe: id,
                    at: Instant::now(),
                    text,
                };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        self.children.insert(id, child);
        id
    }

    fn pid(&self, id: usize) -> u32 {
        self.children[&id].id().unwrap()
    }

    fn signal(&self, id: usize, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(id).to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    async fn kill(&mut self, id: usize) {
        let mut child = self.children.remove(&id).unwrap();
        child.kill().await.unwrap();
    }

    /// The next line matching `wanted`, failing the test if none comes within `within`.
    async fn expect(
        &mut self,
        within: Duration,
        what: &str,
        wanted: impl Fn(&Line) -> bool,
    ) -> Line {
        let deadline = Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {what} within {within:?}; lines so far: {:#?}",
                        self.seen
                    )
                })
                .unwrap();
            self.seen.push(line.clone());
            if wanted(&line) {
                return line;
            }
        }
    }

    /// The first line since index `from` of [`seen`](Self::seen) matching `wanted`, whether
    /// already read or still to come.
    async fn expect_since(
        &mut self,
        from: usize,
        within: Duration,
        what: &str,
        wanted: impl Fn(&Line) -> bool,
    ) -> Line {
        if let Some(line) = self.seen[from..].iter().find(|line| wanted(line)) {
            return line.clone();
        }
        self.expect(within, what, wanted).await
    }

    /// Lines read since index `from` of [`seen`](Self::seen).
    fn since(&self, from: usize) -> &[Line] {
        &self.seen[from..]
    }

    async fn control(&self) -> MasterControl<dyn Backend> {
        MasterControl::new(connect(&self.url, &self.prefix).await)
    }

    fn master_name(&self) -> MasterName {
        MasterName::new(&self.name).unwrap()
    }

    async fn shut_down(mut self) {
        for id in self.children.keys().copied().collect::<Vec<_>>() {
            self.kill(id).await;
        }
    }
}

fn starts(line: &Line) -> bool {
    line.text.starts_with("start ")
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

async fn killed_master_is_replaced_within_its_lease(backend: Durable) {
    let mut cluster = Cluster::new(&backend);
    for _ in 0..3 {
        cluster.spawn();
    }
    let first = cluster.expect(STARTUP, "first start", starts).await;
    let master = first.probe;
    // One master: it acts a few times while no other instance starts.
    let mark = cluster.seen.len() - 1;
    for _ in 0..5 {
        cluster
            .expect(WAIT, "the master acting", |line| {
                line.probe == master && line.text.starts_with("act ")
            })
            .await;
    }
    assert!(
        !cluster.since(mark + 1).iter().any(starts),
        "a second instance started: {:#?}",
        cluster.seen
    );

    cluster.kill(master).await;
    let killed_at = Instant::now();
    let next = cluster.expect(WAIT, "a start after the kill", starts).await;
    let failover = next.at - killed_at;
    println!(
        "    {} failover after SIGKILL with a {LEASE:?} lease: {failover:?}",
        backend.kind
    );
    assert_ne!(next.probe, master);
    assert!(next.token() > first.token(), "{next:?} after {first:?}");
    assert!(
        failover < LEASE + Duration::from_millis(1000),
        "failover took {failover:?} with a {LEASE:?} lease"
    );

    // A clean shutdown hands over at once, without waiting for the lease.
    let second = next.probe;
    cluster.signal(second, "TERM");
    let terminated_at = Instant::now();
    cluster
        .expect(WAIT, "stop on shutdown", |line| {
            line.probe == second && line.text.ends_with("cause=shutdown")
        })
        .await;
    let third = cluster
        .expect(WAIT, "a start after the shutdown", starts)
        .await;
    assert!(third.probe != master && third.probe != second);
    assert!(
        third.at - terminated_at < LEASE / 2,
        "handover after a clean shutdown took {:?}",
        third.at - terminated_at
    );
    cluster.shut_down().await;
}

async fn paused_master_does_not_act_again(backend: Durable) {
    let mut cluster = Cluster::new(&backend);
    for _ in 0..3 {
        cluster.spawn();
    }
    let first = cluster.expect(STARTUP, "first start", starts).await;
    let paused = first.probe;
    let old_token = first.token().unwrap();
    cluster.signal(paused, "STOP");
    let next = cluster
        .expect(WAIT, "a start while the master is paused", starts)
        .await;
    assert_ne!(next.probe, paused);
    assert!(next.token().unwrap() > old_token);
    for _ in 0..3 {
        cluster
            .expect(WAIT, "the new master acting", |line| {
                line.probe == next.probe && line.text.starts_with("act ")
            })
            .await;
    }

    cluster.signal(paused, "CONT");
    let resumed_at = cluster.seen.len();
    let stop = cluster
        .expect(WAIT, "the resumed master's stop", |line| {
            line.probe == paused && line.text.starts_with("stop ")
        })
        .await;
    assert_eq!(stop.text, format!("stop token={old_token} cause=expired"));
    cluster
        .expect(WAIT, "the old token refused", |line| {
            line.probe == paused && line.text == format!("event token-rejected token={old_token}")
        })
        .await;
    let acted: Vec<&Line> = cluster
        .since(resumed_at)
        .iter()
        .filter(|line| line.probe == paused && line.text.starts_with("act "))
        .collect();
    assert!(
        acted.is_empty(),
        "the deposed master acted after it resumed: {acted:#?}"
    );
    // The new master was never disturbed.
    assert!(
        !cluster
            .since(resumed_at)
            .iter()
            .any(|line| line.probe == next.probe && line.text.starts_with("stop ")),
        "{:#?}",
        cluster.seen
    );
    cluster.shut_down().await;
}

async fn disable_and_enable_across_instances_and_restarts(backend: Durable) {
    let mut cluster = Cluster::new(&backend);
    let probes: Vec<usize> = (0..3).map(|_| cluster.spawn()).collect();
    let first = cluster.expect(STARTUP, "first start", starts).await;
    let control = cluster.control().await;
    let operator = Owner::new("operator").unwrap();
    let disabled_at = cluster.seen.len();
    control
        .disable(&cluster.master_name(), "maintenance", &operator)
        .await
        .unwrap();
    let stop = cluster
        .expect(WAIT, "the master's stop", |line| {
            line.probe == first.probe && line.text.starts_with("stop ")
        })
        .await;
    assert_eq!(
        stop.text,
        format!("stop token={} cause=disabled", first.token().unwrap())
    );
    for probe in probes {
        cluster
            .expect_since(
                disabled_at,
                WAIT,
                "every instance seeing the master disabled",
                |line| line.probe == probe && line.text == "event disabled reason=maintenance",
            )
            .await;
    }
    // Once its lease is released (after `stop`), nobody holds the master.
    cluster
        .expect_since(disabled_at, WAIT, "the master's lease released", |line| {
            line.probe == first.probe && line.text.starts_with("event stopped ")
        })
        .await;
    let status = control.status(&[]).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].disabled.as_ref().unwrap().reason, "maintenance");
    assert!(status[0].holder.is_none());

    // Restart every instance: the disabled state is in the backend.
    let mark = cluster.seen.len();
    for id in cluster.children.keys().copied().collect::<Vec<_>>() {
        cluster.kill(id).await;
    }
    let restarted: Vec<usize> = (0..2).map(|_| cluster.spawn()).collect();
    for &probe in &restarted {
        cluster
            .expect_since(
                mark,
                STARTUP,
                "a restarted instance seeing the master disabled",
                |line| line.probe == probe && line.text == "event disabled reason=maintenance",
            )
            .await;
    }
    assert!(
        !cluster.since(mark).iter().any(starts),
        "{:#?}",
        cluster.seen
    );

    assert!(control.enable(&cluster.master_name()).await.unwrap());
    let next = cluster.expect(WAIT, "a start once enabled", starts).await;
    assert!(next.token() > first.token());
    let mark = cluster.seen.len();
    for _ in 0..5 {
        cluster
            .expect(WAIT, "the new master acting", |line| {
                line.probe == next.probe && line.text.starts_with("act ")
            })
            .await;
    }
    assert!(
        !cluster.since(mark).iter().any(starts),
        "two masters: {:#?}",
        cluster.seen
    );
    let status = control.status(&[]).await.unwrap();
    assert_eq!(
        status[0].holder.as_ref().unwrap().token.get(),
        next.token().unwrap()
    );
    assert!(status[0].disabled.is_none());
    cluster.shut_down().await;
}
