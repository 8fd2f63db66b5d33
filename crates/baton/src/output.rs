//! What the commands show: what they read as JSON for scripts or as aligned columns for people
//! (`--output json|table`), and progress bars on standard error for long operations.
//!
//! Commands only choose what to print and in which [`OutputFormat`]; how each value looks is
//! here, one [`Printable`] implementation per kind of answer.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use baton_core::{Attempt, AttemptOutcome, Job, JobState, LockHolder, QueueCounts, Timestamp};
use baton_tasklocks::{QueueEntry, is_internal, parse_queue_entry};
use comfy_table::{CellAlignment, Table, presets};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::config::Provenance;
use crate::master::ControlEntry;
use crate::tasks::StoredTask;
use crate::wire::{JobList, QueueState, WorkerList};

/// How a command prints what it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// JSON, for scripts.
    Json,
    /// Aligned columns under a header row, for people.
    #[value(alias = "text")]
    Table,
}

impl OutputFormat {
    /// The default of the commands that printed JSON before `--output` existed: a table when
    /// standard output is a terminal, JSON otherwise, so that scripts read what they always
    /// read.
    pub fn for_stdout() -> Self {
        Self::when_terminal(std::io::stdout().is_terminal())
    }

    /// [`Self::Table`] for a terminal, [`Self::Json`] for anything else.
    pub fn when_terminal(is_terminal: bool) -> Self {
        if is_terminal { Self::Table } else { Self::Json }
    }
}

/// A value a command prints: serialized as it is for [`OutputFormat::Json`], drawn by
/// [`Printable::table`] for [`OutputFormat::Table`].
pub trait Printable: Serialize {
    /// The value as aligned columns for people, ending with a newline.
    fn table(&self) -> String;
}

/// `value` as `format` says, ending with a newline. JSON is pretty-printed, as every read
/// command printed it before `--output` existed.
///
/// # Errors
///
/// The value cannot be serialized.
pub fn render<T: Printable + ?Sized>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => Ok(format!("{}\n", serde_json::to_string_pretty(value)?)),
        OutputFormat::Table => Ok(value.table()),
    }
}

/// Prints `value` on standard output as `format` says.
///
/// # Errors
///
/// The value cannot be serialized, or standard output cannot be written.
pub fn print<T: Printable + ?Sized>(value: &T, format: OutputFormat) -> anyhow::Result<()> {
    let text = render(value, format)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

impl Printable for Job {
    fn table(&self) -> String {
        let mut fields = vec![
            ("id", self.id.to_string()),
            ("queue", self.queue.to_string()),
            ("state", self.state.to_string()),
            ("priority", self.priority.0.to_string()),
            (
                "attempts",
                format!("{} of {}", self.attempts, self.retry.max_attempts),
            ),
            ("created", time(self.created_at)),
            ("run_at", time(self.run_at)),
            ("finished", self.finished_at.map_or_else(dash, time)),
        ];
        if let Some(lease) = &self.lease {
            fields.push((
                "lease",
                format!(
                    "{} (token {}) until {}",
                    lease.owner(),
                    lease.token(),
                    time(lease.expires_at())
                ),
            ));
        }
        fields.push(("payload", shorten(&self.payload.to_string())));
        if let Some(result) = &self.result {
            fields.push(("result", shorten(&result.to_string())));
        }
        if let Some(error) = &self.error {
            fields.push(("error", shorten(error)));
        }
        let mut out = field_rows(&fields);
        out.push('\n');
        if self.history.is_empty() {
            out.push_str("no attempt yet\n");
        } else {
            out.push_str(&attempts_table(&self.history));
        }
        out
    }
}

impl Printable for JobList {
    fn table(&self) -> String {
        let mut out = if self.jobs.is_empty() {
            "no job\n".to_owned()
        } else {
            let mut table = table(&["ID", "QUEUE", "STATE", "ATTEMPTS", "CREATED", "RUN_AT"]);
            align_right(&mut table, &[0, 3]);
            for job in &self.jobs {
                table.add_row(vec![
                    job.id.to_string(),
                    job.queue.to_string(),
                    job.state.to_string(),
                    format!("{}/{}", job.attempts, job.retry.max_attempts),
                    time(job.created_at),
                    time(job.run_at),
                ]);
            }
            finish(&table)
        };
        if let Some(next) = self.next {
            out.push_str(&format!("\nnext page: --before {next}\n"));
        }
        out
    }
}

impl Printable for WorkerList {
    fn table(&self) -> String {
        if !self.broker {
            return "this server runs no broker ([broker] enabled = true runs one)\n".to_owned();
        }
        if self.workers.is_empty() {
            return "no worker is connected\n".to_owned();
        }
        let mut table = table(&["NAME", "QUEUE", "STATE", "JOB", "CONNECTED", "LAST_SEEN"]);
        for worker in &self.workers {
            table.add_row(vec![
                worker.name.clone().unwrap_or_else(|| worker.peer.clone()),
                worker.queue.to_string(),
                worker.state.as_str().to_owned(),
                worker.job.map_or_else(dash, |job| job.to_string()),
                time(worker.connected),
                time(worker.last_seen),
            ]);
        }
        finish(&table)
    }
}

impl Printable for QueueCounts {
    fn table(&self) -> String {
        let mut table = table(&["STATE", "COUNT"]);
        align_right(&mut table, &[1]);
        for state in JobState::ALL {
            table.add_row(vec![state.to_string(), self.get(state).to_string()]);
        }
        finish(&table)
    }
}

impl Printable for QueueState {
    fn table(&self) -> String {
        let mut table = table(&["QUEUE", "PAUSED"]);
        table.add_row(vec![self.queue.clone(), yes_no(self.paused).to_owned()]);
        finish(&table)
    }
}

impl Printable for [ControlEntry] {
    fn table(&self) -> String {
        if self.is_empty() {
            return "no master leads or is disabled\n".to_owned();
        }
        let mut table = table(&["MASTER", "HOLDER", "SINCE", "TOKEN", "DISABLED"]);
        for entry in self {
            let disabled = match (&entry.disabled_reason, &entry.disabled_by) {
                (Some(reason), Some(by)) => format!("yes ({reason}; by {by})"),
                _ => "no".to_owned(),
            };
            table.add_row(vec![
                entry.lock_name.clone(),
                entry.holder.clone().unwrap_or_else(dash),
                entry.since.clone().unwrap_or_else(dash),
                entry.token.map_or_else(dash, |token| token.to_string()),
                disabled,
            ]);
        }
        finish(&table)
    }
}

impl Printable for [LockHolder] {
    fn table(&self) -> String {
        let held: Vec<&LockHolder> = self.iter().filter(|h| !is_internal(&h.name)).collect();
        let mut out = if held.is_empty() {
            "no lock is held\n".to_owned()
        } else {
            let mut table = table(&["LOCK", "HOLDER", "TOKEN", "SINCE", "EXPIRES", "REASON"]);
            for holder in held {
                table.add_row(vec![
                    holder.name.to_string(),
                    holder.lease.owner().to_string(),
                    holder.lease.token().to_string(),
                    precise_time(holder.since),
                    precise_time(holder.lease.expires_at()),
                    holder.reason.clone(),
                ]);
            }
            finish(&table)
        };
        let mut waiting: Vec<QueueEntry> = self.iter().filter_map(parse_queue_entry).collect();
        if !waiting.is_empty() {
            waiting.sort_by(|a, b| (&a.name, a.ticket).cmp(&(&b.name, b.ticket)));
            let mut table = table(&["WAITING FOR", "TICKET", "WAITER", "REASON"]);
            for entry in waiting {
                table.add_row(vec![
                    entry.name.to_string(),
                    entry.ticket.to_string(),
                    entry.holder.lease.owner().to_string(),
                    entry.reason,
                ]);
            }
            out.push('\n');
            out.push_str(&finish(&table));
        }
        out
    }
}

impl Printable for [StoredTask] {
    fn table(&self) -> String {
        if self.is_empty() {
            return "no task\n".to_owned();
        }
        let mut table = table(&[
            "ID", "STATE", "LOCKS", "STARTED", "ENDED", "EXIT", "COMMAND",
        ]);
        for task in self {
            let record = &task.record;
            table.add_row(vec![
                record.id.to_string(),
                task_state(task),
                join_locks(task),
                record.started_at.map_or_else(dash, precise_time),
                record.ended_at.map_or_else(dash, precise_time),
                task_exit(task),
                record.command.join(" "),
            ]);
        }
        finish(&table)
    }
}

impl Printable for StoredTask {
    fn table(&self) -> String {
        let record = &self.record;
        let mut fields = vec![
            ("id", record.id.to_string()),
            ("state", task_state(self)),
            ("command", record.command.join(" ")),
            ("locks", join_locks(self)),
            ("reason", record.reason.clone()),
            ("pid", record.pid.map_or_else(dash, |pid| pid.to_string())),
            ("runner_pid", self.runner_pid.to_string()),
            ("owner", self.owner.clone()),
            (
                "token",
                record.token.map_or_else(dash, |token| token.to_string()),
            ),
            ("created", precise_time(record.created_at)),
            ("started", record.started_at.map_or_else(dash, precise_time)),
            ("ended", record.ended_at.map_or_else(dash, precise_time)),
            ("exit", task_exit(self)),
            ("log", record.log_path.display().to_string()),
        ];
        if let Some(error) = &record.error {
            fields.push(("error", error.clone()));
        }
        field_rows(&fields)
    }
}

/// `baton config show`: one `key = value  # source` line per setting, the sources aligned, so
/// that a line can be pasted into `baton.toml` as it is.
impl Printable for [Provenance] {
    fn table(&self) -> String {
        let lines: Vec<String> = self
            .iter()
            .map(|setting| format!("{} = {}", setting.key, setting.value))
            .collect();
        let width = lines.iter().map(String::len).max().unwrap_or(0);
        lines
            .iter()
            .zip(self)
            .map(|(line, setting)| format!("{line:<width$}  # {}\n", setting.source))
            .collect()
    }
}

/// Where progress is drawn: on standard error while it is a terminal, nowhere otherwise, so
/// that nothing but the answer is written when the output is read by a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressTarget {
    /// Standard error, a terminal.
    Stderr,
    /// Nowhere: indicatif's hidden draw target.
    Hidden,
}

impl ProgressTarget {
    /// [`Self::Stderr`] when standard error is a terminal, [`Self::Hidden`] otherwise.
    pub fn stderr_if_terminal() -> Self {
        Self::when_terminal(std::io::stderr().is_terminal())
    }

    /// [`Self::Stderr`] for a terminal, [`Self::Hidden`] for anything else.
    pub fn when_terminal(is_terminal: bool) -> Self {
        if is_terminal {
            Self::Stderr
        } else {
            Self::Hidden
        }
    }

    /// A bar counting to `length`, such as the jobs of a file to send, labelled `unit`.
    pub fn bar(self, length: u64, unit: &str) -> ProgressBar {
        let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{elapsed}}, {{eta}} left)");
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        ProgressBar::with_draw_target(Some(length), self.draw_target()).with_style(style)
    }

    /// A spinner showing `message` and the time it has spun, for work of no known length,
    /// such as one figure of `baton bench`.
    pub fn spinner(self, message: impl Into<Cow<'static, str>>) -> ProgressBar {
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let spinner = ProgressBar::with_draw_target(None, self.draw_target())
            .with_style(style)
            .with_message(message);
        if self == Self::Stderr {
            spinner.enable_steady_tick(Duration::from_millis(120));
        }
        spinner
    }

    fn draw_target(self) -> ProgressDrawTarget {
        match self {
            Self::Stderr => ProgressDrawTarget::stderr(),
            Self::Hidden => ProgressDrawTarget::hidden(),
        }
    }
}

/// A borderless table with `header`, its columns two spaces apart.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// `table` as lines without trailing blanks, each ending with a newline.
fn finish(table: &Table) -> String {
    table
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

fn align_right(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// `name value` rows, the values aligned, under a `FIELD VALUE` header.
fn field_rows(fields: &[(&str, String)]) -> String {
    let mut table = table(&["FIELD", "VALUE"]);
    for (name, value) in fields {
        table.add_row(vec![(*name).to_owned(), value.clone()]);
    }
    finish(&table)
}

fn attempts_table(history: &[Attempt]) -> String {
    let mut table = table(&[
        "ATTEMPT", "OWNER", "STARTED", "FINISHED", "OUTCOME", "ERROR",
    ]);
    align_right(&mut table, &[0]);
    for attempt in history {
        let (outcome, error) = match &attempt.outcome {
            None => ("running", String::new()),
            Some(AttemptOutcome::Succeeded) => ("succeeded", String::new()),
            Some(AttemptOutcome::Failed { error }) => ("failed", shorten(error)),
            Some(AttemptOutcome::Expired) => ("expired", String::new()),
            Some(AttemptOutcome::Canceled) => ("canceled", String::new()),
        };
        table.add_row(vec![
            attempt.number.to_string(),
            attempt.owner.to_string(),
            time(attempt.started_at),
            attempt.finished_at.map_or_else(dash, time),
            outcome.to_owned(),
            error,
        ]);
    }
    finish(&table)
}

fn task_state(task: &StoredTask) -> String {
    let record = &task.record;
    if task.orphaned() {
        format!("{} (runner gone)", record.state)
    } else if let Some(waiting) = &record.waiting_for {
        format!("{} ({waiting})", record.state)
    } else {
        record.state.to_string()
    }
}

fn task_exit(task: &StoredTask) -> String {
    match (task.record.exit_code, task.record.signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => dash(),
    }
}

fn join_locks(task: &StoredTask) -> String {
    task.record
        .locks
        .iter()
        .map(|lock| lock.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The longest a payload, result or error is shown in a table; `--output json` shows it all.
const CELL_CHARS: usize = 80;

/// `text` on one line and at most [`CELL_CHARS`] characters, ending in `…` if it was cut.
fn shorten(text: &str) -> String {
    let flat = text.replace(['\n', '\r', '\t'], " ");
    if flat.chars().count() <= CELL_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A job's time, to the second, in UTC.
fn time(time: Timestamp) -> String {
    humantime::format_rfc3339_seconds(time.to_system_time()).to_string()
}

/// A lease's or task's time, to the millisecond, in UTC.
fn precise_time(time: Timestamp) -> String {
    humantime::format_rfc3339_millis(time.to_system_time()).to_string()
}

fn dash() -> String {
    "-".to_owned()
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use baton_core::{FencingToken, JobId, Lease, LockName, Owner, RetryPolicy};
    use serde_json::json;

    use super::*;

    /// A job as the API hands it out, read from JSON so that fields added to `Job` later
    /// keep their defaults here.
    fn job(id: i64, state: JobState) -> Job {
        serde_json::from_value(json!({
            "id": id,
            "queue": "emails",
            "payload": {"to": "a@b.c"},
            "priority": 5,
            "state": state,
            "attempts": 1,
            "retry": RetryPolicy::default(),
            "created_at": 1_700_000_000_000_i64,
            "run_at": 1_700_000_060_000_i64,
            "finished_at": null,
            "result": null,
            "error": null,
            "lease": null,
            "history": [{
                "number": 1,
                "owner": "worker-1",
                "started_at": 1_700_000_061_000_i64,
                "finished_at": 1_700_000_062_000_i64,
                "outcome": "failed",
                "error": "smtp said no",
            }],
        }))
        .unwrap()
    }

    /// The words of the line of `text` whose first word is `first`.
    fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
        text.lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|words| words.first() == Some(&first))
            .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
    }

    #[test]
    fn a_job_list_is_a_header_row_then_one_aligned_row_per_job() {
        let list = JobList {
            jobs: vec![job(12, JobState::Pending), job(3, JobState::Succeeded)],
            next: Some(JobId::new(3)),
        };
        let text = render(&list, OutputFormat::Table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "QUEUE", "STATE", "ATTEMPTS", "CREATED", "RUN_AT"]
        );
        assert_eq!(
            row(&text, "12"),
            [
                "12",
                "emails",
                "pending",
                "1/20",
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:14:20Z"
            ]
        );
        assert_eq!(row(&text, "3")[2], "succeeded");
        // The columns line up: every state starts where the STATE header does.
        let column = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("pending"), Some(column));
        assert_eq!(lines[2].find("succeeded"), Some(column));
        assert!(text.lines().all(|line| line == line.trim_end()));
        assert!(text.ends_with("\nnext page: --before 3\n"), "{text}");
    }

    #[test]
    fn an_empty_job_list_says_so() {
        let list = JobList {
            jobs: Vec::new(),
            next: None,
        };
        assert_eq!(render(&list, OutputFormat::Table).unwrap(), "no job\n");
    }

    #[test]
    fn a_job_is_field_value_rows_then_its_attempts() {
        let mut job = job(7, JobState::Running);
        job.lease = Some(Lease::granted(
            Owner::new("worker-2").unwrap(),
            FencingToken::new(4),
            Timestamp::from_millis(1_700_000_100_000),
        ));
        job.payload = json!({"text": "x".repeat(200)});
        let text = render(&job, OutputFormat::Table).unwrap();
        assert_eq!(row(&text, "FIELD"), ["FIELD", "VALUE"]);
        assert_eq!(row(&text, "id"), ["id", "7"]);
        assert_eq!(row(&text, "state"), ["state", "running"]);
        assert_eq!(row(&text, "attempts"), ["attempts", "1", "of", "20"]);
        assert_eq!(
            row(&text, "lease"),
            [
                "lease",
                "worker-2",
                "(token",
                "4)",
                "until",
                "2023-11-14T22:15:00Z"
            ]
        );
        let payload = row(&text, "payload")[1];
        assert_eq!(payload.chars().count(), CELL_CHARS);
        assert!(payload.ends_with('…'));
        assert_eq!(
            row(&text, "ATTEMPT"),
            [
                "ATTEMPT", "OWNER", "STARTED", "FINISHED", "OUTCOME", "ERROR"
            ]
        );
        assert_eq!(
            row(&text, "1"),
            [
                "1",
                "worker-1",
                "2023-11-14T22:14:21Z",
                "2023-11-14T22:14:22Z",
                "failed",
                "smtp",
                "said",
                "no"
            ]
        );
    }

    #[test]
    fn counts_are_one_row_per_state_in_the_order_of_a_jobs_life() {
        let counts = QueueCounts {
            pending: 2,
            running: 1,
            succeeded: 1500,
            failed: 0,
            canceled: 0,
        };
        let text = render(&counts, OutputFormat::Table).unwrap();
        assert_eq!(
            text,
            "STATE      COUNT\n\
             pending        2\n\
             running        1\n\
             succeeded   1500\n\
             failed         0\n\
             canceled       0\n"
        );
    }

    #[test]
    fn json_is_the_pretty_json_printed_before_there_was_a_choice() {
        let counts = QueueCounts {
            pending: 2,
            ..QueueCounts::default()
        };
        assert_eq!(
            render(&counts, OutputFormat::Json).unwrap(),
            format!("{}\n", serde_json::to_string_pretty(&counts).unwrap())
        );
        let job = job(1, JobState::Pending);
        let printed = render(&job, OutputFormat::Json).unwrap();
        let parsed: Job = serde_json::from_str(&printed).unwrap();
        assert_eq!(parsed, job);
    }

    #[test]
    fn the_format_follows_the_terminal_unless_chosen() {
        assert_eq!(OutputFormat::when_terminal(true), OutputFormat::Table);
        assert_eq!(OutputFormat::when_terminal(false), OutputFormat::Json);
    }

    #[test]
    fn master_and_lock_tables_keep_their_columns() {
        let entries = [ControlEntry {
            lock_name: "nightly".to_owned(),
            holder: None,
            since: None,
            token: None,
            expires_at: None,
            holder_alive: None,
            disabled: true,
            disabled_reason: Some("maintenance window".to_owned()),
            disabled_by: Some("cli".to_owned()),
            disabled_since: None,
        }];
        let text = render(&entries[..], OutputFormat::Table).unwrap();
        assert_eq!(
            row(&text, "MASTER"),
            ["MASTER", "HOLDER", "SINCE", "TOKEN", "DISABLED"]
        );
        assert!(
            text.contains("nightly  -       -      -      yes (maintenance window; by cli)"),
            "{text}"
        );
        let empty: &[ControlEntry] = &[];
        assert_eq!(
            render(empty, OutputFormat::Table).unwrap(),
            "no master leads or is disabled\n"
        );

        let holders = [LockHolder {
            name: LockName::new("app:42").unwrap(),
            lease: Lease::granted(
                Owner::new("host-1").unwrap(),
                FencingToken::new(9),
                Timestamp::from_millis(1_700_000_030_000),
            ),
            reason: "backup of app 42".to_owned(),
            since: Timestamp::from_millis(1_700_000_000_000),
        }];
        let text = render(&holders[..], OutputFormat::Table).unwrap();
        assert_eq!(
            row(&text, "app:42"),
            [
                "app:42",
                "host-1",
                "9",
                "2023-11-14T22:13:20.000Z",
                "2023-11-14T22:13:50.000Z",
                "backup",
                "of",
                "app",
                "42"
            ]
        );
    }

    #[test]
    fn settings_are_key_value_lines_with_their_sources_aligned() {
        let settings = [
            Provenance {
                key: "listen".to_owned(),
                value: json!("127.0.0.1:7600"),
                source: "default".to_owned(),
            },
            Provenance {
                key: "master.lease".to_owned(),
                value: json!(null),
                source: "baton.toml".to_owned(),
            },
        ];
        assert_eq!(
            render(&settings[..], OutputFormat::Table).unwrap(),
            "listen = \"127.0.0.1:7600\"  # default\n\
             master.lease = null        # baton.toml\n"
        );
    }

    #[test]
    fn a_bar_for_a_non_terminal_is_hidden_and_counts_to_its_length() {
        let target = ProgressTarget::when_terminal(false);
        assert_eq!(target, ProgressTarget::Hidden);
        let bar = target.bar(2500, "jobs sent");
        assert!(bar.is_hidden(), "nothing is drawn");
        assert_eq!(bar.length(), Some(2500));
        bar.inc(1000);
        assert_eq!(bar.position(), 1000);
        bar.finish_and_clear();

        let spinner = target.spinner("measuring lock");
        assert!(spinner.is_hidden(), "nothing is drawn");
        spinner.finish_and_clear();
        assert_eq!(ProgressTarget::when_terminal(true), ProgressTarget::Stderr);
    }
}
