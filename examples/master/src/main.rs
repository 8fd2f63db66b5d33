//! Run with: `cargo run -p example-master -- [--lease-ms 800] [--dir PATH]`
//!
//! Three instances of a service, `node-1` to `node-3`, compete to run its scheduler through a
//! master executor on one SQLite file. Each instance is a thread with its own runtime and its
//! own connection, so that they share nothing but the file, as separate processes would.
//! Whichever instance is master runs the scheduler: it writes a tick to a ledger every eighth of
//! the lease, stamped with its fencing token, and the ledger refuses a token older than the
//! newest it has seen.
//!
//! The demo stops the first master (a clean shutdown releases the lease, so another instance
//! takes over at once), kills the second (its runtime is dropped with every task in it, as a
//! crash would, so the lease is left to run out before the last instance takes over) and stops
//! the third. It prints one line per event and a summary, and fails if two leaderships were
//! ever current at once, a new master's token was not above every earlier one, or the ledger
//! refused a tick.
//!
//! Options: `--lease-ms N` (800; the master renews it every fifth of that), `--dir PATH` (a
//! new temporary directory, removed at the end).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use baton_core::{FencingToken, Owner};
use baton_master::{
    Leadership, MasterControl, MasterExecutor, MasterJob, MasterName, MasterOptions,
    MasterSettings, StopCause, job_fn,
};
use baton_sqlite::{SqliteBackend, SqliteConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The longest the demo waits for any one thing to happen.
const WAIT: Duration = Duration::from_secs(10);

/// How many ticks each master writes before the demo moves on.
const TICKS: u64 = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    std::fs::create_dir_all(&options.dir)?;
    let result = run_demo(&options).await;
    if options.temporary {
        std::fs::remove_dir_all(&options.dir).ok();
    }
    result
}

// ---------------------------------------------------------------------------------------------
// The demo: starts the instances, stops one master, kills the next, and checks the ledger.

async fn run_demo(options: &Options) -> anyhow::Result<()> {
    let url = format!("sqlite://{}", options.dir.join("baton.db").display());
    // Connecting creates the tables, before any instance opens the file.
    let control = MasterControl::new(Arc::new(
        SqliteBackend::connect(SqliteConfig::new(&url)).await?,
    ));
    let master = MasterName::new("scheduler")?;
    let settings = MasterSettings {
        init_delay: Duration::ZERO,
        heartbeat_interval: options.lease / 5,
        lease: Some(options.lease),
        ..MasterSettings::default()
    };
    settings.validate()?;
    println!(
        "demo: 3 instances compete for master \"{master}\" on {} (lease {} ms, renewed every {} ms)",
        options.dir.join("baton.db").display(),
        options.lease.as_millis(),
        settings.heartbeat_interval.as_millis(),
    );

    let (reports, inbox) = mpsc::unbounded_channel();
    let ledger = Arc::new(Ledger::new(reports));
    let mut reports = Reports { inbox };
    let mut instances = Vec::new();
    for n in 1..=3 {
        let node = Owner::new(format!("node-{n}"))?;
        let options = MasterOptions::new(master.clone())
            .with_settings(settings)
            .with_owner(node);
        instances.push(Instance::start(
            options,
            url.clone(),
            ledger.clone(),
            tick_interval(settings),
        )?);
    }

    // The first master: elected, checked against the backend, at work; then stopped cleanly.
    let (first, token) = reports.elected().await?;
    check_holder(&control, &master, &first, token).await?;
    reports.ticks(&first).await?;
    println!("demo: stopping {first}");
    let asked = Instant::now();
    take(&mut instances, &first)?.end(Ending::Stop).await?;
    reports.stopped(&first).await?;

    // The second: takes over at once, since the first released its lease; then killed.
    let (second, token) = reports.elected().await?;
    println!(
        "demo: {second} took over {} ms after {first} was asked to stop",
        asked.elapsed().as_millis()
    );
    check_holder(&control, &master, &second, token).await?;
    reports.ticks(&second).await?;
    println!("demo: killing {second}; its lease is left to run out");
    take(&mut instances, &second)?.end(Ending::Kill).await?;
    let killed = Instant::now();

    // The third: takes over once the killed master's lease has run out; then stopped.
    let (third, token) = reports.elected().await?;
    println!(
        "demo: {third} took over {} ms after {second} was killed (lease {} ms)",
        killed.elapsed().as_millis(),
        options.lease.as_millis()
    );
    check_holder(&control, &master, &third, token).await?;
    reports.ticks(&third).await?;
    println!("demo: stopping {third}");
    take(&mut instances, &third)?.end(Ending::Stop).await?;
    reports.stopped(&third).await?;
    let status = control.status(std::slice::from_ref(&master)).await?;
    if let Some(holder) = status.into_iter().find_map(|status| status.holder) {
        bail!(
            "every instance is gone, yet {} holds the lease",
            holder.owner
        );
    }
    println!("demo: nobody holds \"{master}\" any more");

    let summary = ledger.summary();
    for violation in &summary.violations {
        println!("violation: {violation}");
    }
    let tokens: Vec<String> = summary.tokens.iter().map(ToString::to_string).collect();
    println!(
        "done: {} leaderships, tokens {}, {} ticks written, {} refused; {}",
        summary.tokens.len(),
        tokens.join(" < "),
        summary.ticks,
        summary.refused,
        if summary.violations.is_empty() {
            "never two leaders at once"
        } else {
            "INVARIANTS BROKEN"
        }
    );
    if !summary.violations.is_empty() {
        bail!("{} invariant violations", summary.violations.len());
    }
    Ok(())
}

/// How often a master writes a tick: every eighth of the lease.
fn tick_interval(settings: MasterSettings) -> Duration {
    settings.effective_lease() / 8
}

/// Removes the instance called `node` from `instances`.
fn take(instances: &mut Vec<Instance>, node: &Owner) -> anyhow::Result<Instance> {
    let index = instances
        .iter()
        .position(|instance| &instance.node == node)
        .with_context(|| format!("{node} is not running"))?;
    Ok(instances.remove(index))
}

/// Asks the backend who holds `master`, and fails unless it is `node` with `token`.
async fn check_holder(
    control: &MasterControl<SqliteBackend>,
    master: &MasterName,
    node: &Owner,
    token: FencingToken,
) -> anyhow::Result<()> {
    let status = control.status(std::slice::from_ref(master)).await?;
    match status.into_iter().find_map(|status| status.holder) {
        Some(holder) if &holder.owner == node && holder.token == token => {
            println!("demo: the backend agrees: {node} holds \"{master}\" with token {token}");
            Ok(())
        }
        Some(holder) => bail!(
            "{node} leads with token {token}, but the backend says {} holds the lease with token {}",
            holder.owner,
            holder.token
        ),
        None => {
            bail!("{node} leads with token {token}, but the backend says nobody holds the lease")
        }
    }
}

/// The command line.
struct Options {
    /// The master's lease.
    lease: Duration,
    /// Where the SQLite file lives.
    dir: PathBuf,
    /// Whether `dir` was made for this run, to be removed at the end.
    temporary: bool,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Self {
            lease: Duration::from_millis(800),
            dir: std::env::temp_dir().join(format!("baton-master-example-{}", std::process::id())),
            temporary: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--lease-ms" => {
                    let ms = value()?.parse().context("--lease-ms needs a number")?;
                    options.lease = Duration::from_millis(ms);
                }
                "--dir" => {
                    options.dir = PathBuf::from(value()?);
                    options.temporary = false;
                }
                other => bail!("unknown option {other}"),
            }
        }
        Ok(options)
    }
}

// ---------------------------------------------------------------------------------------------
// One instance of the service.

/// How an instance ends.
enum Ending {
    /// A clean shutdown: the master's `stop` runs and its lease is released at once.
    Stop,
    /// A crash: every task of the instance vanishes mid-flight and its lease is left to run
    /// out.
    Kill,
}

/// An instance: a thread with its own runtime and its own connection to the SQLite file.
struct Instance {
    node: Owner,
    ending: oneshot::Sender<Ending>,
    done: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Instance {
    /// Starts the instance named in `options`, competing for the master on the file at `url`
    /// and running the scheduler, which ticks every `tick`, whenever it is master.
    fn start(
        options: MasterOptions,
        url: String,
        ledger: Arc<Ledger>,
        tick: Duration,
    ) -> anyhow::Result<Self> {
        let node = options.owner.clone().context("an instance needs a name")?;
        let (ending, ending_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let name = node.clone();
        let thread = std::thread::Builder::new()
            .name(node.to_string())
            .spawn(move || {
                let job = scheduler(name.clone(), ledger.clone(), tick);
                if let Err(error) = run_instance(options, &url, job, ending_rx) {
                    ledger.failed(&name, &error);
                }
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            node,
            ending,
            done,
            thread,
        })
    }

    /// Ends the instance as `ending` says and waits until it is gone.
    async fn end(self, ending: Ending) -> anyhow::Result<()> {
        // An instance that is gone already is found out by the wait.
        let _ = self.ending.send(ending);
        tokio::time::timeout(WAIT, self.done)
            .await
            .map_err(|_| anyhow!("{} did not end within {WAIT:?}", self.node))?
            .ok();
        // The thread has finished its work (or panicked); joining only collects it.
        self.thread
            .join()
            .map_err(|_| anyhow!("{} panicked", self.node))
    }
}

/// The body of an instance's thread: competes for the master until told to end.
fn run_instance(
    options: MasterOptions,
    url: &str,
    job: impl MasterJob,
    ending: oneshot::Receiver<Ending>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let killed = runtime.block_on(async {
        let backend = Arc::new(SqliteBackend::connect(SqliteConfig::new(url)).await?);
        let executor = MasterExecutor::start(backend, options, job)?;
        match ending.await {
            Ok(Ending::Kill) => Ok::<_, anyhow::Error>(Some(executor)),
            // Told to stop, or the demo is gone.
            Ok(Ending::Stop) | Err(_) => {
                executor.shutdown().await;
                Ok(None)
            }
        }
    })?;
    // Killed: nothing of this instance runs again once `block_on` has returned. Its tasks are
    // dropped with the runtime, unfinished, and only then the executor handle, whose drop would
    // otherwise ask them for a clean shutdown.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(killed);
    Ok(())
}

/// The master's job: while this instance leads, write a tick to the ledger every `tick`.
fn scheduler(node: Owner, ledger: Arc<Ledger>, tick: Duration) -> impl MasterJob {
    let on_stop = ledger.clone();
    job_fn(
        move |leadership: Leadership| {
            let ledger = ledger.clone();
            async move {
                ledger.elected(&leadership);
                let mut count = 0;
                loop {
                    count += 1;
                    if !ledger.tick(&leadership, count) {
                        return;
                    }
                    tokio::select! {
                        () = leadership.lost() => return,
                        () = tokio::time::sleep(tick) => {}
                    }
                }
            }
        },
        move |token: FencingToken, cause: StopCause| {
            let (ledger, node) = (on_stop.clone(), node.clone());
            async move { ledger.report(Report::Stopped { node, token, cause }) }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The ledger: where the masters' work lands, and what checks the executor's promises.

/// What the instances report, in the order the ledger saw it.
enum Report {
    /// `node` became master with `token`.
    Elected {
        /// The new master.
        node: Owner,
        /// Its leadership's token.
        token: FencingToken,
    },
    /// `node` wrote tick `count` of its leadership, under `token`.
    Tick {
        /// The master that wrote it.
        node: Owner,
        /// The token it was stamped with.
        token: FencingToken,
        /// Which tick of this leadership it was, from 1.
        count: u64,
    },
    /// `node` stopped being master; its job's `stop` ran.
    Stopped {
        /// The former master.
        node: Owner,
        /// The token of the leadership that ended.
        token: FencingToken,
        /// Why it ended.
        cause: StopCause,
    },
    /// `node` could not run at all.
    Failed {
        /// The instance.
        node: Owner,
        /// What went wrong.
        error: String,
    },
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Elected { node, token } => write!(f, "{node}: elected master, token {token}"),
            Self::Tick { node, token, count } => write!(f, "{node}: tick {count}, token {token}"),
            Self::Stopped { node, token, cause } => {
                write!(f, "{node}: stopped being master ({cause}), token {token}")
            }
            Self::Failed { node, error } => write!(f, "{node}: failed: {error}"),
        }
    }
}

/// Where the scheduler's ticks land, standing in for the systems a master writes to. It takes
/// a tick only with a token no older than the newest it has taken, and it checks that no two
/// leaderships are ever current at once and that each new one has a greater token.
struct Ledger {
    state: Mutex<LedgerState>,
    reports: mpsc::UnboundedSender<Report>,
}

/// The ledger's records.
#[derive(Default)]
struct LedgerState {
    /// Every leadership that has started, oldest first.
    leaderships: Vec<Leadership>,
    /// The newest token a tick was taken with.
    newest: Option<FencingToken>,
    /// How many ticks were taken.
    ticks: u64,
    /// How many ticks were refused for an old token.
    refused: u64,
    /// Every broken promise seen.
    violations: Vec<String>,
}

/// What the ledger saw, for the summary.
struct Summary {
    /// The token of every leadership, in the order they started.
    tokens: Vec<FencingToken>,
    /// How many ticks were taken.
    ticks: u64,
    /// How many ticks were refused.
    refused: u64,
    /// Every broken promise seen.
    violations: Vec<String>,
}

impl Ledger {
    fn new(reports: mpsc::UnboundedSender<Report>) -> Self {
        Self {
            state: Mutex::default(),
            reports,
        }
    }

    /// Records a new leadership: every earlier one must be over, and have a smaller token.
    fn elected(&self, leadership: &Leadership) {
        let mut state = self.lock();
        let (node, token) = (leadership.owner().clone(), leadership.token());
        let mut violations = Vec::new();
        for earlier in &state.leaderships {
            if earlier.is_current() {
                violations.push(format!(
                    "{node} became master with token {token} while {} still led with token {}",
                    earlier.owner(),
                    earlier.token()
                ));
            }
            if earlier.token() >= token {
                violations.push(format!(
                    "{node} became master with token {token}, not above {}'s earlier token {}",
                    earlier.owner(),
                    earlier.token()
                ));
            }
        }
        state.violations.extend(violations);
        state.leaderships.push(leadership.clone());
        self.report(Report::Elected { node, token });
    }

    /// Writes tick `count` of `leadership`; false if the leadership is over (the master stops
    /// acting as soon as its lease may have run out) or the tick was refused.
    fn tick(&self, leadership: &Leadership, count: u64) -> bool {
        let mut state = self.lock();
        // The master's own check, made while no other instance can be elected in between.
        if !leadership.is_current() {
            return false;
        }
        let (node, token) = (leadership.owner().clone(), leadership.token());
        // The ledger's check: a token older than the newest seen is a deposed master's.
        if let Some(newest) = state.newest
            && token < newest
        {
            state.refused += 1;
            state.violations.push(format!(
                "the ledger refused tick {count} of {node}: token {token} is older than {newest}"
            ));
            return false;
        }
        state.newest = Some(token);
        state.ticks += 1;
        self.report(Report::Tick { node, token, count });
        true
    }

    /// Reports that `node` could not run.
    fn failed(&self, node: &Owner, error: &anyhow::Error) {
        self.report(Report::Failed {
            node: node.clone(),
            error: format!("{error:#}"),
        });
    }

    /// Passes `report` on to the demo.
    fn report(&self, report: Report) {
        // Nobody to tell once the demo has ended.
        let _ = self.reports.send(report);
    }

    fn summary(&self) -> Summary {
        let state = self.lock();
        Summary {
            tokens: state.leaderships.iter().map(Leadership::token).collect(),
            ticks: state.ticks,
            refused: state.refused,
            violations: state.violations.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The instances' reports as the demo reads them: each printed once, in order.
struct Reports {
    inbox: mpsc::UnboundedReceiver<Report>,
}

impl Reports {
    /// Waits for the next master to be elected.
    async fn elected(&mut self) -> anyhow::Result<(Owner, FencingToken)> {
        self.until("election", |report| match report {
            Report::Elected { node, token } => Some((node.clone(), *token)),
            _ => None,
        })
        .await
    }

    /// Waits for `master` to write its first [`TICKS`] ticks.
    async fn ticks(&mut self, master: &Owner) -> anyhow::Result<()> {
        self.until(&format!("{TICKS} ticks from {master}"), |report| {
            matches!(report, Report::Tick { node, count, .. } if node == master && *count >= TICKS)
                .then_some(())
        })
        .await
    }

    /// Waits for `master`'s `stop` to run.
    async fn stopped(&mut self, master: &Owner) -> anyhow::Result<()> {
        self.until(&format!("stop of {master}"), |report| {
            matches!(report, Report::Stopped { node, .. } if node == master).then_some(())
        })
        .await
    }

    /// Prints reports until one that `wanted` picks; fails if none comes within [`WAIT`] or
    /// an instance could not run.
    async fn until<T>(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&Report) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + WAIT;
        loop {
            let report = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .map_err(|_| anyhow!("no {what} within {WAIT:?}"))?
                .context("every instance is gone")?;
            println!("{report}");
            if let Report::Failed { node, .. } = &report {
                bail!("{node} could not run");
            }
            if let Some(found) = wanted(&report) {
                return Ok(found);
            }
        }
    }
}
