//! Run with: `cargo run -p example-tasklocks -- [--dir PATH]`
//!
//! Nightly maintenance of two apps through Baton's task runner. Two runners, `ops-1` and
//! `ops-2`, share one in-memory lock backend and run each task as a `sh -c` child process that
//! holds the locks it declared: a backup of app 1 (`app:1`), a backup of app 2 (`app:2`), and a
//! migration that needs both apps at once. The migration waits for both backups and takes both
//! locks in one step or none: when app 1's backup is done, `app:1` stays free rather than half
//! held. An hourly backup of app 1 that will not wait is refused, naming the holder and the
//! migration in line before it; an export of app 1 waits its turn behind the migration. App 2's
//! backup fails (exit code 3), and its lock is freed with its process all the same.
//!
//! Each task works until the example lets it finish (it waits for a file of its own to appear),
//! so the overlaps are the ones the scenario sets up, not accidents of timing. The example
//! prints a line per start, wait, refusal and finish, the holders and waiters of both locks
//! after each step, and a summary. It checks that no lock ever had two holders at once (from the
//! start and end lines the tasks append to a journal, and from the backend and the runners'
//! records at each step) and that the migration held both apps or neither, and exits non-zero
//! if either breaks.
//!
//! Options: `--dir PATH` (where the journal and the task logs go; by default a new temporary
//! directory, removed at the end unless something went wrong).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use baton_core::{Lock, LockName, Owner};
use baton_memory::MemoryBackend;
use baton_tasklocks::{
    Failure, LockSettings, RunnerConfig, TaskHandle, TaskRecord, TaskRunner, TaskSpec, TaskState,
    Wait, app, is_internal, parse_queue_entry,
};

/// How long any awaited event may take before the example gives up.
const WITHIN: Duration = Duration::from_secs(20);

/// The environment variable naming the journal a task notes its start and end in.
const JOURNAL_ENV: &str = "JOURNAL";
/// The environment variable naming the file whose appearance lets a task finish its work.
const GATE_ENV: &str = "GATE";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (dir, keep) = arguments()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let backend = Arc::new(MemoryBackend::new());
    let mut scenario = Scenario {
        ops1: runner(&backend, "ops-1", 1, &dir)?,
        ops2: runner(&backend, "ops-2", 101, &dir)?,
        journal: dir.join("journal"),
        backend,
        dir: dir.clone(),
        looks: 0,
    };
    println!(
        "ops-1 and ops-2 run tasks on one in-memory lock backend; journal and task logs in {}",
        dir.display()
    );
    let outcome = scenario.run().await;
    if outcome.is_err() {
        scenario.stop_every_task().await;
        println!("journal and task logs kept in {}", dir.display());
    } else if !keep {
        std::fs::remove_dir_all(&dir).ok();
    }
    outcome
}

/// The directory to work in, and whether it was named (and so is kept).
fn arguments() -> anyhow::Result<(PathBuf, bool)> {
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(args.next().context("--dir needs a path")?)),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(match dir {
        Some(dir) => (dir, true),
        None => (
            std::env::temp_dir().join(format!("baton-tasklocks-example-{}", std::process::id())),
            false,
        ),
    })
}

/// A runner for `owner` on `backend`, numbering its tasks from `first_task_id`, with quick
/// polls and a one-second grace between SIGTERM and SIGKILL.
fn runner(
    backend: &Arc<MemoryBackend>,
    owner: &str,
    first_task_id: u64,
    dir: &Path,
) -> anyhow::Result<TaskRunner<MemoryBackend>> {
    let mut config = RunnerConfig::new(Owner::new(owner)?, dir.join("logs"));
    config.locks = LockSettings {
        poll_interval: Duration::from_millis(50),
        ..LockSettings::default()
    };
    config.kill_grace = Duration::from_secs(1);
    config.first_task_id = first_task_id;
    Ok(TaskRunner::new(backend.clone(), config)?)
}

/// The two runners on their shared backend, and where the tasks note what they do.
struct Scenario {
    /// The lock backend both runners share.
    backend: Arc<MemoryBackend>,
    /// The runner of `ops-1`, numbering its tasks from 1.
    ops1: TaskRunner<MemoryBackend>,
    /// The runner of `ops-2`, numbering its tasks from 101.
    ops2: TaskRunner<MemoryBackend>,
    /// Where the journal, the gates and the task logs go.
    dir: PathBuf,
    /// The file every task appends its start and end to.
    journal: PathBuf,
    /// How many times the locks were looked at and checked.
    looks: usize,
}

impl Scenario {
    /// Runs the scenario step by step, each step waiting for the events it causes, then checks
    /// the journal and prints the summary.
    async fn run(&mut self) -> anyhow::Result<()> {
        let backup_1 = self.submit(
            Host::Ops1,
            "nightly backup of app 1",
            &[app(1)?],
            r#"echo "backing up app 1""#,
            Wait::Forever,
        )?;
        backup_1.started().await?;
        let backup_2 = self.submit(
            Host::Ops2,
            "nightly backup of app 2",
            &[app(2)?],
            r#"echo "backing up app 2"; echo "no space left on device" >&2; exit 3"#,
            Wait::Forever,
        )?;
        backup_2.started().await?;

        let migration = self.submit(
            Host::Ops1,
            "migration of apps 1 and 2",
            &[app(1)?, app(2)?],
            r#"echo "migrating apps 1 and 2 to schema v2""#,
            Wait::Forever,
        )?;
        migration
            .waits(&format!(
                "waiting for {} and {} to finish",
                backup_1.description(),
                backup_2.description()
            ))
            .await?;
        let hourly = self.submit(
            Host::Ops2,
            "hourly backup of app 1",
            &[app(1)?],
            r#"echo "backing up app 1""#,
            Wait::NoWait,
        )?;
        hourly.refused().await?;
        let export = self.submit(
            Host::Ops2,
            "export of app 1",
            &[app(1)?],
            r#"echo "exporting app 1""#,
            Wait::Forever,
        )?;
        export
            .waits(&format!(
                "waiting for {} to finish, behind {} queued earlier",
                backup_1.description(),
                migration.description()
            ))
            .await?;
        self.look(&migration).await?;

        // App 1 is free, but the migration takes it only with app 2, and the export stays
        // behind the migration.
        backup_1.let_finish().await?;
        migration
            .waits(&format!("waiting for {} to finish", backup_2.description()))
            .await?;
        export
            .waits(&format!(
                "waiting behind {} queued earlier",
                migration.description()
            ))
            .await?;
        self.look(&migration).await?;

        // App 2's backup fails; its lock goes with its process and the migration takes both.
        backup_2.let_finish().await?;
        migration.started().await?;
        export
            .waits(&format!(
                "waiting for {} to finish",
                migration.description()
            ))
            .await?;
        self.look(&migration).await?;

        migration.let_finish().await?;
        export.started().await?;
        self.look(&migration).await?;
        export.let_finish().await?;
        self.look(&migration).await?;

        let journal = Journal::check(&self.journal)?;
        self.summarize(&journal, &migration)
    }

    /// Hands a task to `host`'s runner: it holds `locks`, runs `work` once the example lets it
    /// finish, and waits for its locks as `wait` says.
    fn submit(
        &self,
        host: Host,
        reason: &str,
        locks: &[LockName],
        work: &str,
        wait: Wait,
    ) -> anyhow::Result<Task> {
        let runner = match host {
            Host::Ops1 => &self.ops1,
            Host::Ops2 => &self.ops2,
        };
        let gate = self
            .dir
            .join(format!("gate-{}-{}", host.name(), runner.list().len()));
        let mut spec = TaskSpec::new("sh")
            .arg("-c")
            .arg(script(work))
            .reason(reason)
            .wait(wait)
            .env(JOURNAL_ENV, self.journal.display().to_string())
            .env(GATE_ENV, gate.display().to_string());
        for lock in locks {
            spec = spec.lock(lock.clone());
        }
        let handle = runner.run(spec)?;
        Ok(Task {
            runner: runner.clone(),
            host,
            handle,
            gate,
        })
    }

    /// Prints who holds and who waits for each app's lock, and checks, against the backend and
    /// the runners' records, that no two running tasks share a lock, that every running task
    /// holds its locks under its own token and nobody else holds any, and that the migration
    /// holds both apps or neither.
    async fn look(&mut self, migration: &Task) -> anyhow::Result<()> {
        self.looks += 1;
        let holders = self.backend.holders().await?;
        for name in [app(1)?, app(2)?] {
            let holder = holders.iter().find(|holder| holder.name == name);
            let held = holder.map_or_else(
                || "free".to_owned(),
                |holder| {
                    format!(
                        "held by {} for {} with token {}",
                        holder.reason,
                        holder.lease.owner(),
                        holder.lease.token()
                    )
                },
            );
            let mut line: Vec<_> = holders
                .iter()
                .filter_map(parse_queue_entry)
                .filter(|entry| entry.name == name)
                .collect();
            line.sort_by_key(|entry| entry.ticket);
            let waiting: Vec<String> = line.into_iter().map(|entry| entry.reason).collect();
            if waiting.is_empty() {
                println!("  {name}  {held}");
            } else {
                println!("  {name}  {held}; in line: {}", waiting.join(", "));
            }
        }

        let records: Vec<TaskRecord> = self
            .ops1
            .list()
            .into_iter()
            .chain(self.ops2.list())
            .collect();
        let running: Vec<&TaskRecord> = records
            .iter()
            .filter(|record| record.state == TaskState::Running)
            .collect();
        for (i, a) in running.iter().enumerate() {
            for b in &running[i + 1..] {
                if let Some(shared) = a.locks.iter().find(|lock| b.locks.contains(lock)) {
                    bail!(
                        "{} and {} run at once, both holding {shared}",
                        a.description(),
                        b.description()
                    );
                }
            }
        }
        for record in &running {
            for lock in &record.locks {
                ensure!(
                    holders
                        .iter()
                        .any(|holder| holder.name == *lock
                            && Some(holder.lease.token()) == record.token),
                    "{} runs without holding {lock}",
                    record.description()
                );
            }
        }
        for holder in holders.iter().filter(|holder| !is_internal(&holder.name)) {
            ensure!(
                running
                    .iter()
                    .any(|record| record.description() == holder.reason
                        && record.token == Some(holder.lease.token())
                        && record.locks.contains(&holder.name)),
                "{} is held by {} with token {}, which is no running task",
                holder.name,
                holder.reason,
                holder.lease.token()
            );
        }
        let wanted = migration.handle.record().locks;
        let held_by_migration: Vec<&LockName> = holders
            .iter()
            .filter(|holder| !is_internal(&holder.name))
            .filter(|holder| holder.reason == migration.description())
            .map(|holder| &holder.name)
            .collect();
        ensure!(
            held_by_migration.is_empty() || held_by_migration.len() == wanted.len(),
            "the migration holds {held_by_migration:?} of {wanted:?}: part of its locks"
        );
        Ok(())
    }

    /// Checks the tasks' records against the journal and prints the summary line.
    fn summarize(&self, journal: &Journal, migration: &Task) -> anyhow::Result<()> {
        let records: Vec<TaskRecord> = self
            .ops1
            .list()
            .into_iter()
            .chain(self.ops2.list())
            .collect();
        for record in &records {
            ensure!(
                record.started_at.is_some() == journal.locks.contains_key(&record.id.0),
                "the journal and the record of {} disagree on whether it ran",
                record.description()
            );
        }
        let migration_id = migration.handle.id().0;
        let noted: Vec<String> = migration
            .handle
            .record()
            .locks
            .iter()
            .map(ToString::to_string)
            .collect();
        ensure!(
            journal.locks.get(&migration_id) == Some(&noted),
            "the migration ran holding {:?}, not {noted:?}",
            journal.locks.get(&migration_id)
        );

        let refused = |record: &TaskRecord| record.failure == Some(Failure::LocksBusy);
        let succeeded = records
            .iter()
            .filter(|record| record.state == TaskState::Succeeded)
            .count();
        let refusals = records.iter().filter(|record| refused(record)).count();
        let failed = records.len() - succeeded - refusals;
        let holders = |lock: &str| -> (usize, String) {
            let tokens = journal.tokens.get(lock).map_or(&[][..], Vec::as_slice);
            let list: Vec<String> = tokens.iter().map(ToString::to_string).collect();
            (tokens.len(), list.join(", "))
        };
        let ((app_1, tokens_1), (app_2, tokens_2)) = (holders("app:1"), holders("app:2"));
        println!(
            "done: {} tasks: {succeeded} succeeded, {failed} failed, {refusals} refused; app:1 \
             had {app_1} holders in turn (tokens {tokens_1}), app:2 had {app_2} (tokens \
             {tokens_2}); no lock ever had two holders at once; the migration held both apps or \
             neither at each of {} looks",
            records.len(),
            self.looks
        );
        Ok(())
    }

    /// Stops every task that has not ended, so that nothing outlives a failed run.
    async fn stop_every_task(&self) {
        for runner in [&self.ops1, &self.ops2] {
            for record in runner.list() {
                if !record.state.is_final() {
                    let _ = tokio::time::timeout(WITHIN, runner.kill(record.id)).await;
                }
            }
        }
    }
}

/// The runners of the scenario.
#[derive(Clone, Copy)]
enum Host {
    /// The runner `ops-1`.
    Ops1,
    /// The runner `ops-2`.
    Ops2,
}

impl Host {
    /// The runner's owner name.
    fn name(self) -> &'static str {
        match self {
            Self::Ops1 => "ops-1",
            Self::Ops2 => "ops-2",
        }
    }
}

/// A task handed to a runner.
struct Task {
    /// The runner that runs it.
    runner: TaskRunner<MemoryBackend>,
    /// Which runner that is.
    host: Host,
    /// Its record as it changes.
    handle: TaskHandle,
    /// The file whose appearance lets the task finish its work.
    gate: PathBuf,
}

impl Task {
    /// What waiters are told about it: "task 1 (nightly backup of app 1)".
    fn description(&self) -> String {
        self.handle.record().description()
    }

    /// How it is named in the example's lines: "task 1 on ops-1 (nightly backup of app 1)".
    fn name(&self) -> String {
        let record = self.handle.record();
        format!(
            "task {} on {} ({})",
            record.id,
            self.host.name(),
            record.reason
        )
    }

    /// Waits for its process to start, holding its locks.
    async fn started(&self) -> anyhow::Result<()> {
        let record = within(
            &format!("{} starting", self.name()),
            self.handle
                .wait_until(|record| record.state == TaskState::Running),
        )
        .await?;
        ensure!(
            record.state == TaskState::Running,
            "{} did not start: {record:?}",
            self.name()
        );
        let locks: Vec<String> = record.locks.iter().map(ToString::to_string).collect();
        let token = record
            .token
            .map_or_else(String::new, |token| token.to_string());
        println!(
            "start    {}: holds {} with token {token}",
            self.name(),
            locks.join(", ")
        );
        Ok(())
    }

    /// Waits until it says it waits with `message`.
    async fn waits(&self, message: &str) -> anyhow::Result<()> {
        let told = self
            .handle
            .wait_until(|record| record.waiting_for.as_deref() == Some(message));
        let Ok(record) = tokio::time::timeout(WITHIN, told).await else {
            let record = self.handle.record();
            bail!(
                "{} was to be {message}, but after {WITHIN:?} it is {}: {}",
                self.name(),
                record.state,
                record.waiting_for.unwrap_or_default()
            );
        };
        ensure!(
            record.state == TaskState::Waiting && record.waiting_for.as_deref() == Some(message),
            "{} was to be {message}, but is {}: {record:?}",
            self.name(),
            record.state
        );
        println!("wait     {}: {message}", self.name());
        Ok(())
    }

    /// Waits for it to be refused its locks.
    async fn refused(&self) -> anyhow::Result<()> {
        let record = within(&format!("{} ending", self.name()), self.handle.finished()).await?;
        ensure!(
            record.state == TaskState::Failed && record.failure == Some(Failure::LocksBusy),
            "{} was to be refused its locks: {record:?}",
            self.name()
        );
        println!(
            "refused  {}: {}",
            self.name(),
            record.error.unwrap_or_default()
        );
        Ok(())
    }

    /// Lets it finish its work, and waits for it to end.
    async fn let_finish(&self) -> anyhow::Result<()> {
        std::fs::write(&self.gate, "")
            .with_context(|| format!("cannot create {}", self.gate.display()))?;
        let record = within(&format!("{} ending", self.name()), self.handle.finished()).await?;
        let how = match (record.state, record.exit_code, record.signal) {
            (TaskState::Failed, Some(code), _) => format!("failed with exit code {code}"),
            (TaskState::Failed, None, Some(signal)) => format!("failed, ended by signal {signal}"),
            (state, ..) => state.to_string(),
        };
        match self.last_output()? {
            Some(output) if record.state != TaskState::Succeeded => println!(
                "finish   {}: {how}; its log ends with \"{output}\"",
                self.name()
            ),
            _ => println!("finish   {}: {how}", self.name()),
        }
        Ok(())
    }

    /// The last line the task's process wrote to its log (the runner's own notes start with
    /// `[baton]`).
    fn last_output(&self) -> anyhow::Result<Option<String>> {
        let log = self.runner.read_log(self.handle.id())?;
        Ok(log
            .lines()
            .rev()
            .find(|line| !line.starts_with("[baton]"))
            .map(str::to_owned))
    }
}

/// Waits for `future`, failing if `what` takes longer than [`WITHIN`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(WITHIN, future)
        .await
        .with_context(|| format!("{what} did not happen within {WITHIN:?}"))
}

/// The shell script of a task. It notes its start in the journal with its task number, fencing
/// token and locks (as the runner hands them over in its environment), works until its gate
/// file appears (giving up after half a minute), runs `work`, and notes its end with the exit
/// status of `work`, which it exits with.
fn script(work: &str) -> String {
    format!(
        r#"locks=$(printf '%s' "$BATON_TASK_LOCKS" | tr '\n' ,)
echo "start $BATON_TASK_ID $BATON_FENCING_TOKEN $locks" >> "${JOURNAL_ENV}"
(
  i=0
  while [ ! -e "${GATE_ENV}" ]; do
    i=$((i + 1))
    if [ "$i" -gt 1500 ]; then echo "gave up waiting for ${GATE_ENV}" >&2; exit 1; fi
    sleep 0.02
  done
  {work}
)
status=$?
echo "end $BATON_TASK_ID $status" >> "${JOURNAL_ENV}"
exit "$status""#
    )
}

/// What the tasks noted in the journal, checked: no lock had two holders at once, every task
/// that started ended, and each lock's fencing tokens rose from holder to holder.
struct Journal {
    /// The locks each task held, by task number, as its process saw them.
    locks: BTreeMap<u64, Vec<String>>,
    /// The fencing tokens of each lock's holders, in the order they held it.
    tokens: BTreeMap<String, Vec<u64>>,
}

impl Journal {
    /// Reads the journal at `path` and checks it.
    fn check(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        let mut journal = Self {
            locks: BTreeMap::new(),
            tokens: BTreeMap::new(),
        };
        // Who holds each lock now, as the lines so far tell it.
        let mut holding: BTreeMap<String, u64> = BTreeMap::new();
        let mut running: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["start", task, token, locks] => {
                    let (task, token): (u64, u64) = (task.parse()?, token.parse()?);
                    let locks: Vec<String> = locks.split(',').map(str::to_owned).collect();
                    for lock in &locks {
                        if let Some(other) = holding.insert(lock.clone(), task) {
                            bail!("task {task} started holding {lock} while task {other} held it");
                        }
                        let tokens = journal.tokens.entry(lock.clone()).or_default();
                        if let Some(last) = tokens.last()
                            && *last >= token
                        {
                            bail!("the token of {lock} went from {last} to {token}");
                        }
                        tokens.push(token);
                    }
                    journal.locks.insert(task, locks.clone());
                    running.insert(task, locks);
                }
                ["end", task, _status] => {
                    let task: u64 = task.parse()?;
                    let locks = running
                        .remove(&task)
                        .with_context(|| format!("task {task} ended without starting"))?;
                    for lock in locks {
                        holding.remove(&lock);
                    }
                }
                _ => bail!("unexpected journal line {line:?}"),
            }
        }
        ensure!(
            running.is_empty(),
            "tasks {:?} never ended",
            running.keys().collect::<Vec<_>>()
        );
        Ok(journal)
    }
}

#[cfg(test)]
mod tests {
    use super::Journal;

    /// Checks a journal made of `lines`.
    fn check(lines: &str) -> anyhow::Result<Journal> {
        let path = std::env::temp_dir().join(format!(
            "baton-tasklocks-example-journal-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, lines)?;
        let journal = Journal::check(&path);
        std::fs::remove_file(&path)?;
        journal
    }

    #[test]
    fn a_journal_of_tasks_taking_turns_passes() -> anyhow::Result<()> {
        let journal = check(
            "start 1 1 app:1\nstart 101 1 app:2\nend 1 0\nend 101 3\n\
             start 2 2 app:1,app:2\nend 2 0\n",
        )?;
        assert_eq!(journal.tokens["app:1"], [1, 2]);
        assert_eq!(journal.locks[&2], ["app:1", "app:2"]);
        Ok(())
    }

    #[test]
    fn a_journal_where_two_tasks_hold_one_lock_at_once_fails() {
        let error = check("start 1 1 app:1\nstart 2 2 app:1,app:2\nend 1 0\nend 2 0\n")
            .err()
            .map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some("task 2 started holding app:1 while task 1 held it")
        );
    }

    #[test]
    fn a_journal_whose_tokens_fall_or_whose_tasks_never_end_fails() {
        assert!(check("start 1 2 app:1\nend 1 0\nstart 2 1 app:1\nend 2 0\n").is_err());
        assert!(check("start 1 1 app:1\n").is_err());
    }
}
