//! Run with: `cargo run -p example-sync -- --processes 3 --accounts 12 --seconds 20`
//!
//! A mail-sync service in miniature. Every account has an inbox file under the demo directory
//! (`inbox/<account>.txt`); the account list is whatever inbox files exist. Several processes
//! share the accounts through a Baton sync pool on one SQLite file: each runs a worker per
//! account it holds, which polls the inbox for new messages and records how far it synced in
//! `state/<account>` together with its fencing token, refusing to overwrite a record written
//! under a newer token.
//!
//! The demo delivers mail to random inboxes, opens a new account, starts one more process a
//! third of the way through and stops the first one (SIGTERM) two thirds of the way through,
//! so the log shows accounts being claimed, handed back and taken over. At the end it stops
//! every process and prints the pool's state: every account unclaimed, none lost.
//!
//! Options: `--processes N` (3), `--accounts M` (12), `--seconds S` (20), `--dir PATH` (a new
//! temporary directory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use baton_core::{ItemId, PoolName};
use baton_sqlite::{SqliteBackend, SqliteConfig};
use baton_sync::{
    AccountSource, SourceError, StopReason, SyncConfig, SyncManager, WorkerContext, pool_status,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    match &options.child {
        Some(name) => run_process(&options, name).await,
        None => run_demo(&options).await,
    }
}

/// The command line.
struct Options {
    processes: usize,
    accounts: usize,
    seconds: u64,
    dir: PathBuf,
    /// Set in the processes the demo starts: the process's name in the log.
    child: Option<String>,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Self {
            processes: 3,
            accounts: 12,
            seconds: 20,
            dir: std::env::temp_dir().join(format!("baton-sync-demo-{}", std::process::id())),
            child: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--processes" => options.processes = value()?.parse()?,
                "--accounts" => options.accounts = value()?.parse()?,
                "--seconds" => options.seconds = value()?.parse()?,
                "--dir" => options.dir = PathBuf::from(value()?),
                "--child" => options.child = Some(value()?),
                other => bail!("unknown option {other}"),
            }
        }
        Ok(options)
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("baton.db").display())
    }
}

fn pool() -> anyhow::Result<PoolName> {
    Ok(PoolName::new("mail-accounts")?)
}

async fn connect(options: &Options) -> anyhow::Result<Arc<SqliteBackend>> {
    let backend = SqliteBackend::connect(SqliteConfig::new(options.database_url())).await?;
    Ok(Arc::new(backend))
}

// ---------------------------------------------------------------------------------------------
// The demo: sets up the inboxes, starts and stops processes, delivers mail.

async fn run_demo(options: &Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(options.dir.join("inbox"))?;
    std::fs::create_dir_all(options.dir.join("state"))?;
    for n in 0..options.accounts {
        std::fs::write(inbox(&options.dir, &account_name(n)), "")?;
    }
    let backend = connect(options).await?;
    println!(
        "demo: {} accounts in {}, {} processes, {} s",
        options.accounts,
        options.dir.display(),
        options.processes,
        options.seconds
    );
    let mut processes: Vec<(String, Child)> = Vec::new();
    for n in 0..options.processes {
        processes.push(start_process(options, &format!("p{n}"))?);
    }
    let total = Duration::from_secs(options.seconds);
    let started = Instant::now();
    let (mut joined, mut stopped, mut opened) = (false, false, false);
    let mut message = 0;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(400)).await;
        message += 1;
        let account = account_name(fastrand::usize(..options.accounts));
        deliver(&options.dir, &account, &format!("message #{message}"))?;
        println!("demo: delivered message #{message} to {account}");
        if !opened && started.elapsed() > total / 4 {
            opened = true;
            let account = account_name(options.accounts);
            std::fs::write(inbox(&options.dir, &account), "welcome\n")?;
            println!("demo: opened a new account {account}");
        }
        if !joined && started.elapsed() > total / 3 {
            joined = true;
            let name = format!("p{}", options.processes);
            println!("demo: starting one more process, {name}");
            processes.push(start_process(options, &name)?);
        }
        if !stopped && started.elapsed() > total * 2 / 3 && processes.len() > 1 {
            stopped = true;
            let (name, mut child) = processes.remove(0);
            println!("demo: stopping {name} with SIGTERM");
            terminate(&mut child)?;
        }
    }
    println!("demo: stopping every process");
    for (_, child) in &mut processes {
        terminate(child)?;
    }
    let status = pool_status(&*backend, &*backend, &pool()?).await?;
    println!(
        "demo: done: {} accounts, {} unclaimed, {} processes still listed",
        status.accounts,
        status.unclaimed,
        status.identities.len()
    );
    if status.unclaimed != status.accounts {
        bail!("some accounts are still claimed after every process stopped");
    }
    Ok(())
}

fn start_process(options: &Options, name: &str) -> anyhow::Result<(String, Child)> {
    let child = Command::new(std::env::current_exe()?)
        .args(["--dir", &options.dir.display().to_string(), "--child", name])
        .spawn()?;
    Ok((name.to_owned(), child))
}

/// Sends SIGTERM and waits for the process to return its accounts and exit.
fn terminate(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill failed: {status}");
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("a process exited with {status}");
    }
    Ok(())
}

fn account_name(n: usize) -> String {
    format!("account-{n:02}")
}

fn inbox(dir: &Path, account: &str) -> PathBuf {
    dir.join("inbox").join(format!("{account}.txt"))
}

fn deliver(dir: &Path, account: &str, message: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(inbox(dir, account))?;
    writeln!(file, "{message}")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One process of the pool.

async fn run_process(options: &Options, name: &str) -> anyhow::Result<()> {
    let backend = connect(options).await?;
    let mut config = SyncConfig::new(pool()?).with_heartbeat_ttl(Duration::from_secs(2));
    config.maintenance_interval = Duration::from_millis(500);
    config.source_interval = Duration::from_secs(1);
    config.claim_spacing = Duration::from_millis(100);
    config.claim_period = Duration::from_secs(60);
    let identity = config.identity.clone();
    println!("{name}: started as {identity}");
    let dir = options.dir.clone();
    let worker_name = name.to_owned();
    let worker =
        move |context: WorkerContext| sync_account(worker_name.clone(), dir.clone(), context);
    let source = Inboxes(options.dir.join("inbox"));
    let manager = SyncManager::new(config, backend, source, worker)?;
    let handle = manager.handle();
    manager.run(baton_sync::shutdown_signal()).await?;
    let metrics = handle.metrics();
    println!(
        "{name}: left the pool after {} claims ({} handed back); every claim returned",
        metrics.claims_taken, metrics.handed_back
    );
    Ok(())
}

/// The accounts: one per inbox file.
struct Inboxes(PathBuf);

#[async_trait]
impl AccountSource for Inboxes {
    async fn accounts(&self) -> Result<Vec<ItemId>, SourceError> {
        let mut accounts = Vec::new();
        for entry in std::fs::read_dir(&self.0)? {
            let path = entry?.path();
            if let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) {
                accounts.push(ItemId::new(stem)?);
            }
        }
        Ok(accounts)
    }
}

/// The worker of one account: polls the inbox and records its progress, fenced by its token.
async fn sync_account(name: String, dir: PathBuf, context: WorkerContext) {
    let account = context.account().to_string();
    let token = context.token().get();
    let state = dir.join("state").join(&account);
    let mut synced = read_state(&state).map_or(0, |(_, lines)| lines);
    println!("{name}: {account}: start syncing (token {token}) from message {synced}");
    loop {
        tokio::select! {
            reason = context.cancelled() => {
                let how = if reason == StopReason::ClaimLost { "dropped" } else { "stopped" };
                println!("{name}: {account}: {how}: {reason}");
                return;
            }
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let Ok(text) = std::fs::read_to_string(inbox(&dir, &account)) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() <= synced {
            continue;
        }
        // The downstream store refuses a writer whose token is older than the last one seen.
        if let Some((stored, _)) = read_state(&state)
            && stored > token
        {
            println!("{name}: {account}: token {token} is stale (store has {stored}); stopping");
            return;
        }
        for message in &lines[synced..] {
            println!("{name}: {account}: synced \"{message}\"");
        }
        synced = lines.len();
        if let Err(error) = std::fs::write(&state, format!("{token} {synced}")) {
            println!("{name}: {account}: could not record progress: {error}");
        }
    }
}

/// The token and message count of an account's last recorded progress.
fn read_state(path: &Path) -> Option<(u64, usize)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (token, lines) = text.trim().split_once(' ')?;
    Some((token.parse().ok()?, lines.parse().ok()?))
}
