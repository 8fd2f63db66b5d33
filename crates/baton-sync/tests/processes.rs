//! Sync managers in real processes on every durable backend: 100 accounts shared by three
//! processes, each held by exactly one live process and never run by two at once (checked on
//! the workers' recorded intervals and fencing tokens); a SIGKILLed process's accounts taken
//! over within the heartbeat TTL plus the maintenance interval; a fourth process given its
//! share within a bounded time; SIGTERM returning every claim; accounts added to and removed
//! from the source showing up and leaving.
//!
//! This binary is its own child: run with `BATON_SYNC_PROBE_URL` set, it is a probe, one
//! process running one manager whose workers append `start` and `end` lines to a file. Without
//! it, it runs the scenarios on SQLite (a temporary file), PostgreSQL, MariaDB/MySQL and Redis,
//! whose URLs come from `BATON_TEST_POSTGRES_URL`, `BATON_TEST_MYSQL_URL` and
//! `BATON_TEST_REDIS_URL` (missing ones fail).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use baton_core::{Backend, ItemId, Owner, PoolName};
use baton_sync::{AccountSource, SourceError, SyncConfig, SyncManager, WorkerContext};
use baton_testservers::{Durable, Runner, durable_backends, fresh_prefix, process_prefix};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const PROBE_URL: &str = "BATON_SYNC_PROBE_URL";
const PROBE_PREFIX: &str = "BATON_SYNC_PROBE_PREFIX";
const PROBE_ACCOUNTS: &str = "BATON_SYNC_PROBE_ACCOUNTS";
const PROBE_LOG: &str = "BATON_SYNC_PROBE_LOG";
/// Set to make every worker record an `act` line every 50 ms while its claim is current.
const PROBE_ACT: &str = "BATON_SYNC_PROBE_ACT";

/// The heartbeat TTL of every probe; it beats every fifth of it.
const TTL: Duration = Duration::from_millis(1500);
/// How often a probe reaps, rebalances and reads its source.
const MAINTENANCE: Duration = Duration::from_millis(300);
/// How long a probe may take to start, connect and settle.
const SETTLE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(url) = std::env::var(PROBE_URL) {
        return runtime.block_on(probe(url));
    }
    let mut runner = Runner::from_args();
    let backends = durable_backends("sync");
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
        "three_processes_share_a_hundred_accounts_survive_a_kill_admit_a_fourth_and_return_everything_on_sigterm",
        |backend| Box::pin(share_kill_join_terminate(backend)),
    ),
    (
        "accounts_added_to_and_removed_from_the_source_show_up_and_leave",
        |backend| Box::pin(source_changes(backend)),
    ),
    (
        "a_paused_process_stops_acting_before_its_accounts_move_and_its_tokens_are_refused",
        |backend| Box::pin(paused_process(backend)),
    ),
];

/// The tag of this binary's table and key prefixes.
const TAG: &str = "ts";

/// Opens the backend at `url` on tables named with `prefix`.
async fn connect(url: &str, prefix: &str) -> Arc<dyn Backend> {
    baton_testservers::connect_with(url, prefix, 4).await
}

fn pool() -> PoolName {
    PoolName::new("accounts").unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The probe: one process, one manager, workers that record their intervals.

/// The accounts listed in a file, one per line.
struct FileAccounts(PathBuf);

#[async_trait]
impl AccountSource for FileAccounts {
    async fn accounts(&self) -> Result<Vec<ItemId>, SourceError> {
        let text = tokio::fs::read_to_string(&self.0).await?;
        text.lines()
            .filter(|line| !line.is_empty())
            .map(|line| ItemId::new(line).map_err(Into::into))
            .collect()
    }
}

/// Appends one line per event to the probe's log.
#[derive(Clone)]
struct IntervalLog(Arc<Mutex<std::fs::File>>);

impl IntervalLog {
    fn write(&self, line: &str) {
        let mut file = self.0.lock().unwrap();
        writeln!(file, "{line}").unwrap();
        file.flush().unwrap();
    }
}

/// Writes the `end` line however the worker stops, dropped included.
struct EndLine {
    log: IntervalLog,
    context: WorkerContext,
}

impl Drop for EndLine {
    fn drop(&mut self) {
        let reason = self
            .context
            .stop_reason()
            .map_or_else(|| "own".to_owned(), |reason| format!("{reason:?}"));
        self.log.write(&format!(
            "end {} {} {} {reason}",
            self.context.account(),
            self.context.token(),
            now_ms()
        ));
    }
}

async fn probe(url: String) -> ExitCode {
    let prefix = std::env::var(PROBE_PREFIX).unwrap();
    let accounts = PathBuf::from(std::env::var(PROBE_ACCOUNTS).unwrap());
    let log_path = PathBuf::from(std::env::var(PROBE_LOG).unwrap());
    let backend = connect(&url, &prefix).await;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let log = IntervalLog(Arc::new(Mutex::new(file)));
    let mut config = SyncConfig::new(pool()).with_heartbeat_ttl(TTL);
    config.maintenance_interval = MAINTENANCE;
    config.source_interval = MAINTENANCE;
    config.claim_spacing = Duration::from_millis(5);
    config.claim_period = Duration::from_secs(600);
    config.worker_stop_timeout = Duration::from_secs(2);
    let identity = config.identity.clone();
    let act = std::env::var_os(PROBE_ACT).is_some();
    let worker = move |context: WorkerContext| {
        let log = log.clone();
        async move {
            log.write(&format!(
                "start {} {} {}",
                context.account(),
                context.token(),
                now_ms()
            ));
            let _end = EndLine {
                log: log.clone(),
                context: context.clone(),
            };
            if !act {
                context.cancelled().await;
                return;
            }
            // Act on the account for as long as the claim is current by this process's clock.
            loop {
                tokio::select! {
                    _ = context.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                if context.is_current() {
                    log.write(&format!(
                        "act {} {} {}",
                        context.account(),
                        context.token(),
                        now_ms()
                    ));
                }
            }
        }
    };
    let manager = SyncManager::from_parts(
        config,
        backend.clone(),
        backend,
        Arc::new(FileAccounts(accounts)),
        Arc::new(worker),
    )
    .unwrap();
    println!("identity {identity}");
    match manager.run(baton_sync::shutdown_signal()).await {
        Ok(()) => {
            println!("left");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("failed {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/// One scenario's shared files and backend.
struct Stage {
    url: String,
    prefix: String,
    dir: PathBuf,
    backend: Arc<dyn Backend>,
    next_probe: usize,
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running probe.
struct Probe {
    /// Its position in spawn order, which names its log.
    index: usize,
    child: Child,
    identity: Owner,
    pid: Pid,
    /// When it was SIGKILLed, by the wall clock: its open intervals end there.
    killed_at_ms: Option<u64>,
}

impl Stage {
    async fn new(backend: &Durable, accounts: &[ItemId]) -> Self {
        let prefix = fresh_prefix(TAG);
        let dir = std::env::temp_dir().join(format!("baton-sync-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Connecting first creates the tables before any probe does.
        let connected = connect(&backend.url, &prefix).await;
        let stage = Self {
            url: backend.url.clone(),
            prefix,
            dir,
            backend: connected,
            next_probe: 0,
        };
        stage.set_accounts(accounts);
        stage
    }

    fn accounts_file(&self) -> PathBuf {
        self.dir.join("accounts")
    }

    /// Replaces the source's accounts, atomically.
    fn set_accounts(&self, accounts: &[ItemId]) {
        let temporary = self.dir.join("accounts.new");
        let text: String = accounts.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(temporary, self.accounts_file()).unwrap();
    }

    async fn spawn(&mut self) -> Probe {
        self.spawn_with(false).await
    }

    /// Starts a probe; with `act`, its workers record an `act` line every 50 ms.
    async fn spawn_with(&mut self, act: bool) -> Probe {
        let n = self.next_probe;
        self.next_probe += 1;
        let mut command = Command::new(std::env::current_exe().unwrap());
        if act {
            command.env(PROBE_ACT, "1");
        }
        let mut child = command
            .env(PROBE_URL, &self.url)
            .env(PROBE_PREFIX, &self.prefix)
            .env(PROBE_ACCOUNTS, self.accounts_file())
            .env(PROBE_LOG, self.dir.join(format!("probe-{n}.log")))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(SETTLE, lines.next_line())
            .await
            .expect("the probe did not start")
            .unwrap()
            .expect("the probe exited");
        let identity = Owner::new(line.strip_prefix("identity ").unwrap()).unwrap();
        // Keep reading so that the probe never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        Probe {
            index: n,
            child,
            identity,
            pid,
            killed_at_ms: None,
        }
    }

    /// Who holds each account, by the backend.
    async fn holders(&self) -> BTreeMap<ItemId, Option<Owner>> {
        self.backend
            .items(&pool())
            .await
            .unwrap()
            .into_iter()
            .map(|status| (status.item, status.holder.map(|h| h.owner().clone())))
            .collect()
    }

    /// Waits until every account in `accounts` is held by one of `live`, nothing else is in
    /// the pool, and `also` holds for the counts per identity; returns how long it took.
    async fn wait_until_held(
        &self,
        accounts: &[ItemId],
        live: &[&Probe],
        within: Duration,
        also: impl Fn(&BTreeMap<Owner, usize>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let wanted: BTreeSet<&ItemId> = accounts.iter().collect();
        let identities: BTreeSet<&Owner> = live.iter().map(|probe| &probe.identity).collect();
        loop {
            let holders = self.holders().await;
            let mut counts: BTreeMap<Owner, usize> = BTreeMap::new();
            let mut all_held = holders.keys().collect::<BTreeSet<_>>() == wanted;
            for holder in holders.values() {
                match holder {
                    Some(owner) if identities.contains(owner) => {
                        *counts.entry(owner.clone()).or_default() += 1;
                    }
                    _ => all_held = false,
                }
            }
            if all_held && also(&counts) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "accounts not all held by live processes within {within:?}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every worker interval the probes recorded, by account: (start, end, token, reason).
    fn intervals(&self, probes: &[&Probe]) -> BTreeMap<String, Vec<Interval>> {
        let mut intervals: BTreeMap<String, Vec<Interval>> = BTreeMap::new();
        for n in 0..self.next_probe {
            let text = std::fs::read_to_string(self.dir.join(format!("probe-{n}.log")))
                .unwrap_or_default();
            let killed_at = probes
                .iter()
                .find(|probe| probe.index == n)
                .and_then(|probe| probe.killed_at_ms);
            let mut open: BTreeMap<(String, u64), u64> = BTreeMap::new();
            for line in text.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                let (account, token, at) = (
                    fields[1].to_owned(),
                    fields[2].parse::<u64>().unwrap(),
                    fields[3].parse::<u64>().unwrap(),
                );
                match fields[0] {
                    "act" => {}
                    "start" => {
                        open.insert((account, token), at);
                    }
                    "end" => {
                        let start = open
                            .remove(&(account.clone(), token))
                            .expect("an end without a start");
                        intervals.entry(account).or_default().push(Interval {
                            probe: n,
                            start,
                            end: Some(at),
                            token,
                            reason: fields[4].to_owned(),
                        });
                    }
                    other => panic!("unexpected line {other}"),
                }
            }
            for ((account, token), start) in open {
                intervals.entry(account).or_default().push(Interval {
                    probe: n,
                    start,
                    end: killed_at,
                    token,
                    reason: "killed".to_owned(),
                });
            }
        }
        intervals
    }

    /// Fails if any account was run by two probes at once, or a later run had a token not
    /// greater than an earlier one.
    fn assert_no_overlap(&self, probes: &[&Probe]) -> usize {
        let intervals = self.intervals(probes);
        let mut runs = 0;
        for (account, mut list) in intervals {
            list.sort_by_key(|interval| (interval.start, interval.token));
            runs += list.len();
            for pair in list.windows(2) {
                let (first, second) = (&pair[0], &pair[1]);
                let end = first.end.unwrap_or_else(|| {
                    panic!("{account}: {first:?} never ended, yet {second:?} started")
                });
                assert!(
                    end <= second.start,
                    "{account} ran twice at once: {first:?} and {second:?}"
                );
                assert!(
                    first.token < second.token,
                    "{account}: token {} after {}",
                    second.token,
                    first.token
                );
            }
        }
        runs
    }
}

/// One run of a worker.
#[derive(Debug)]
#[allow(dead_code)]
struct Interval {
    probe: usize,
    start: u64,
    end: Option<u64>,
    token: u64,
    reason: String,
}

impl Probe {
    fn sigkill(&mut self) {
        kill(self.pid, Signal::SIGKILL).unwrap();
    }

    fn sigterm(&self) {
        kill(self.pid, Signal::SIGTERM).unwrap();
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the probe did not exit")
            .unwrap()
    }
}

fn accounts(range: std::ops::Range<usize>) -> Vec<ItemId> {
    range
        .map(|n| ItemId::new(format!("account-{n:03}")).unwrap())
        .collect()
}

async fn share_kill_join_terminate(backend: Durable) {
    let all = accounts(0..100);
    let mut stage = Stage::new(&backend, &all).await;
    let mut probes = Vec::new();
    for _ in 0..3 {
        probes.push(stage.spawn().await);
    }
    // Every account held by exactly one of the three, each near its share of 34.
    let took = stage
        .wait_until_held(&all, &probes.iter().collect::<Vec<_>>(), SETTLE, |counts| {
            counts.len() == 3 && counts.values().all(|&held| (30..=35).contains(&held))
        })
        .await;
    println!(
        "  {}: 3 processes hold 100 accounts after {took:?}",
        backend.kind
    );

    // SIGKILL one: its accounts go to the two others within TTL plus the maintenance interval.
    let mut victim = probes.remove(2);
    let orphans: BTreeSet<ItemId> = stage
        .holders()
        .await
        .into_iter()
        .filter(|(_, holder)| holder.as_ref() == Some(&victim.identity))
        .map(|(item, _)| item)
        .collect();
    victim.sigkill();
    victim.wait_exit(Duration::from_secs(5)).await;
    victim.killed_at_ms = Some(now_ms());
    let killed = Instant::now();
    loop {
        let holders = stage.holders().await;
        if orphans
            .iter()
            .all(|item| holders[item].as_ref() != Some(&victim.identity))
        {
            break;
        }
        assert!(
            killed.elapsed() < SETTLE,
            "the killed process's accounts were never reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reaped = killed.elapsed();
    let reap_bound = TTL + MAINTENANCE + Duration::from_millis(500);
    assert!(
        reaped <= reap_bound,
        "reaped after {reaped:?}, more than {reap_bound:?}"
    );
    stage
        .wait_until_held(&all, &probes.iter().collect::<Vec<_>>(), SETTLE, |counts| {
            counts.len() == 2
        })
        .await;
    let taken_over = killed.elapsed();
    let takeover_bound = reap_bound + Duration::from_secs(3);
    assert!(
        taken_over <= takeover_bound,
        "taken over after {taken_over:?}, more than {takeover_bound:?}"
    );
    println!(
        "  {}: SIGKILLed process's {} accounts reaped after {reaped:?}, all held again after {taken_over:?}",
        backend.kind,
        orphans.len()
    );

    // A fourth process (the third live one) joins and gets its share of 34 within a bound.
    let joined = Instant::now();
    probes.push(stage.spawn().await);
    let newcomer = probes[2].identity.clone();
    stage
        .wait_until_held(&all, &probes.iter().collect::<Vec<_>>(), SETTLE, |counts| {
            counts.get(&newcomer).is_some_and(|&held| held >= 30)
        })
        .await;
    let join_took = joined.elapsed();
    assert!(
        join_took <= Duration::from_secs(10),
        "joining took {join_took:?}"
    );
    println!(
        "  {}: a joining process held its share after {join_took:?}",
        backend.kind
    );

    // SIGTERM: every process stops its workers and returns every claim before it exits.
    for probe in &probes {
        probe.sigterm();
    }
    for probe in &mut probes {
        let status = probe.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "a probe exited with {status}");
    }
    let holders = stage.holders().await;
    assert_eq!(holders.len(), 100);
    assert!(
        holders.values().all(Option::is_none),
        "claims left after SIGTERM: {:?}",
        holders.values().filter(|holder| holder.is_some()).count()
    );
    let mut everyone: Vec<&Probe> = probes.iter().collect();
    everyone.push(&victim);
    let runs = stage.assert_no_overlap(&everyone);
    assert!(runs >= 100 + orphans.len());
    for probe in &everyone {
        assert!(!stage.backend.alive(&probe.identity).await.unwrap());
    }
}

async fn source_changes(backend: Durable) {
    let first = accounts(0..20);
    let mut stage = Stage::new(&backend, &first).await;
    let mut probes = vec![stage.spawn().await, stage.spawn().await];
    let live: Vec<&Probe> = probes.iter().collect();
    stage.wait_until_held(&first, &live, SETTLE, |_| true).await;
    // Ten accounts appear, five leave.
    let second = accounts(5..30);
    stage.set_accounts(&second);
    let changed = Instant::now();
    stage
        .wait_until_held(&second, &live, SETTLE, |_| true)
        .await;
    let took = changed.elapsed();
    assert!(
        took <= Duration::from_secs(5),
        "the pool matched the source after {took:?}"
    );
    println!(
        "  {}: the pool matched the changed source after {took:?}",
        backend.kind
    );
    for probe in &probes {
        probe.sigterm();
    }
    for probe in &mut probes {
        assert!(probe.wait_exit(Duration::from_secs(15)).await.success());
    }
    let everyone: Vec<&Probe> = probes.iter().collect();
    stage.assert_no_overlap(&everyone);
    let intervals = stage.intervals(&everyone);
    for gone in accounts(0..5) {
        let runs = &intervals[gone.as_str()];
        assert!(
            runs.iter().any(|run| run.reason == "AccountRemoved"),
            "{gone}: {runs:?}"
        );
    }
    for new in accounts(20..30) {
        assert!(intervals.contains_key(new.as_str()), "{new} never ran");
    }
}

/// Every `act` line of probe `index`: (account, token, time).
fn acts(stage: &Stage, index: usize) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(stage.dir.join(format!("probe-{index}.log"))).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("act "))
        .map(|rest| {
            let fields: Vec<&str> = rest.split(' ').collect();
            (
                fields[0].to_owned(),
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            )
        })
        .collect()
}

async fn paused_process(backend: Durable) {
    let all = accounts(0..20);
    let mut stage = Stage::new(&backend, &all).await;
    let mut probes = vec![stage.spawn_with(true).await, stage.spawn_with(true).await];
    let live: Vec<&Probe> = probes.iter().collect();
    stage
        .wait_until_held(&all, &live, SETTLE, |counts| {
            counts.values().all(|&held| held == 10)
        })
        .await;
    let paused_identity = probes[0].identity.clone();
    kill(probes[0].pid, Signal::SIGSTOP).unwrap();
    let stopped_ms = now_ms();
    // What the paused probe was running when it stopped, by its own log (stable while it is
    // stopped): account and token.
    let held_before: BTreeMap<ItemId, u64> = stage
        .intervals(&[])
        .into_iter()
        .flat_map(|(account, runs)| {
            runs.into_iter()
                .filter(|run| run.probe == 0 && run.end.is_none())
                .map(move |run| (ItemId::new(&account).unwrap(), run.token))
        })
        .collect();
    assert!(!held_before.is_empty(), "the paused probe ran nothing");
    // The other probe takes every account over once the paused one's heartbeat expired.
    let survivor = [&probes[1]];
    stage
        .wait_until_held(&all, &survivor, SETTLE, |_| true)
        .await;
    // Read before the signal: once resumed, the probe may log its workers' ends before this
    // process runs again.
    let resumed_ms = now_ms();
    kill(probes[0].pid, Signal::SIGCONT).unwrap();
    // Once resumed, the paused probe's workers end at once: their claims are lost.
    let started = Instant::now();
    loop {
        let intervals = stage.intervals(&[]);
        let open = intervals
            .values()
            .flatten()
            .filter(|run| run.probe == 0 && run.end.is_none())
            .count();
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{open} workers still run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let intervals = stage.intervals(&[]);
    for (account, token) in &held_before {
        let run = intervals[account.as_str()]
            .iter()
            .find(|run| run.probe == 0 && run.token == *token)
            .unwrap();
        assert_eq!(run.reason, "ClaimLost", "{run:?}");
        assert!(run.end.unwrap() >= resumed_ms);
    }
    // It never acted after it was paused, while the other probe did.
    let paused_acts = acts(&stage, 0);
    assert!(!paused_acts.is_empty());
    let last_paused_act = paused_acts.iter().map(|(_, _, at)| *at).max().unwrap();
    assert!(
        last_paused_act <= stopped_ms + 50,
        "acted at {last_paused_act}, paused at {stopped_ms}"
    );
    for (account, token) in &held_before {
        let first_new_act = acts(&stage, 1)
            .into_iter()
            .filter(|(acted, new_token, _)| acted == account.as_str() && new_token > token)
            .map(|(_, _, at)| at)
            .min();
        if let Some(first_new_act) = first_new_act {
            assert!(first_new_act > last_paused_act);
        }
        // Its tokens are refused by the backend.
        let stale = baton_core::ClaimLease {
            pool: pool(),
            item: account.clone(),
            lease: baton_core::Lease::granted(
                paused_identity.clone(),
                baton_core::FencingToken::new(*token),
                baton_core::Timestamp::from_millis(i64::MAX),
            ),
        };
        let error = stage
            .backend
            .renew_claim(&stale, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(error.is_lease_lost(), "{error}");
    }
    println!(
        "  {}: paused for {} ms; the resumed process stopped its {} workers without acting",
        backend.kind,
        resumed_ms - stopped_ms,
        held_before.len()
    );
    // It comes back, rejoins, and both return everything on SIGTERM.
    let live: Vec<&Probe> = probes.iter().collect();
    stage
        .wait_until_held(&all, &live, SETTLE, |counts| counts.len() == 2)
        .await;
    for probe in &probes {
        probe.sigterm();
    }
    for probe in &mut probes {
        assert!(probe.wait_exit(Duration::from_secs(15)).await.success());
    }
    assert!(stage.holders().await.values().all(Option::is_none));
}
