//! What each subcommand does, once the command line is parsed.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use baton_core::{QueueName, RetryPolicy};
use indicatif::ProgressBar;
use serde_json::Value;

use crate::bench::{self, BenchSettings};
use crate::cli::{Cli, Command, ConfigCommand, ConfigShowArgs, CountsArgs, EnqueueArgs, JobArgs};
use crate::client::Client;
use crate::config::{self, ConfigOverrides};
use crate::output::{self, ProgressTarget};
use crate::serve;
use crate::wire::{EnqueueRequest, ListQuery, MAX_BATCH_REQUEST};

/// Runs the command `cli` names on a multi-threaded runtime.
///
/// # Errors
///
/// Whatever the command failed with, ready to print.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let config = config::load(file, &args.overrides())?;
            serve::run(&config).await
        }
        Command::Enqueue(args) => enqueue(file, &args).await,
        Command::Job(args) => show_job(file, &args).await,
        Command::Jobs(args) => {
            let query = ListQuery {
                queue: args.queue.clone(),
                state: args.state.clone(),
                before: args.before,
                limit: Some(args.limit),
            };
            let page = client(file, &args.server.overrides())?.list(&query).await?;
            output::print(&page, args.output.format())
        }
        Command::Cancel(args) => cancel_job(file, &args).await,
        Command::Retry(args) => retry_job(file, &args).await,
        Command::Counts(args) => counts(file, &args).await,
        Command::Pause(args) => set_paused(file, &args, true).await,
        Command::Workers(args) => {
            let workers = client(file, &args.server.overrides())?.workers().await?;
            output::print(&workers, args.output.format())
        }
        Command::Resume(args) => set_paused(file, &args, false).await,
        Command::Bench(args) => {
            let config = config::load(file, &args.overrides())?;
            if !args.master_failover.is_empty() {
                let settings = crate::bench_master::FailoverSettings {
                    backend: config.backend,
                    table_prefix: config.table_prefix,
                    modes: args.master_failover,
                    rounds: args.master_rounds,
                    instances: args.master_instances,
                };
                let progress = ProgressTarget::stderr_if_terminal();
                return crate::bench_master::run(&settings, &mut std::io::stdout(), progress).await;
            }
            let settings = BenchSettings::from_args(&config.backend, &config.table_prefix, &args);
            let progress = ProgressTarget::stderr_if_terminal();
            bench::run(&settings, &mut std::io::stdout(), progress).await
        }
        Command::Master(args) => crate::master::run(file, args).await,
        Command::Lock(args) => crate::tasks::run_lock(file, args).await,
        Command::Task(args) => crate::tasks::run_task(file, args).await,
        Command::Config(ConfigCommand::Show(args)) => show_config(file, &args),
        Command::Worker(args) => crate::broker::run_worker(file, args).await,
        Command::Wait(args) => crate::broker::wait(file, args).await,
    }
}

fn client(file: Option<&Path>, overrides: &ConfigOverrides) -> anyhow::Result<Client> {
    let config = config::load(file, overrides)?;
    Ok(Client::new(&config.server)?.with_token(config.api_token.as_ref()))
}

async fn enqueue(file: Option<&Path>, args: &EnqueueArgs) -> anyhow::Result<()> {
    let client = client(file, &args.server.overrides())?;
    let request = |payload: Value| EnqueueRequest {
        queue: args.queue.clone(),
        payload,
        priority: args.priority,
        delay_ms: args
            .delay
            .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        retry: args.max_attempts.map(|max_attempts| RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }),
    };
    let Some(path) = &args.file else {
        let request = request(read_payload(args.payload.as_deref().unwrap_or("-"))?);
        request.to_new_job()?;
        let id = client.enqueue(&request).await?;
        return print_line(&id.to_string());
    };
    // Every line is read and checked before the first batch is sent.
    let requests = read_payload_lines(path)?
        .into_iter()
        .map(|(line, payload)| {
            let request = request(payload);
            request
                .to_new_job()
                .with_context(|| format!("line {line} of {}", path.display()))?;
            Ok(request)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let progress = sending_bar(&requests, ProgressTarget::stderr_if_terminal());
    let sent = send_in_batches(&client, &requests, &progress, &mut std::io::stdout()).await;
    progress.finish_and_clear();
    let sent = sent?;
    eprintln!("enqueued {sent} jobs");
    Ok(())
}

/// A bar counting the jobs of `requests` as they are sent, drawn on `target`.
fn sending_bar(requests: &[EnqueueRequest], target: ProgressTarget) -> ProgressBar {
    target.bar(requests.len() as u64, "jobs sent")
}

/// Sends `requests` in batches of [`MAX_BATCH_REQUEST`], writing the new ids to `out` in order
/// and moving `progress` on by each batch; how many were sent.
async fn send_in_batches(
    client: &Client,
    requests: &[EnqueueRequest],
    progress: &ProgressBar,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let mut sent = 0;
    for chunk in requests.chunks(MAX_BATCH_REQUEST) {
        let ids = client
            .enqueue_batch(chunk)
            .await
            .with_context(|| format!("after {sent} of {} jobs were enqueued", requests.len()))?;
        let lines: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // The ids are written while the bar is off the terminal's last line.
        progress
            .suspend(|| writeln!(out, "{}", lines.join("\n")))
            .context("cannot write to standard output")?;
        sent += ids.len();
        progress.inc(ids.len() as u64);
    }
    Ok(sent)
}

/// The payloads of a file (or standard input for `-`), one JSON value per non-blank line,
/// with their line numbers.
fn read_payload_lines(path: &Path) -> anyhow::Result<Vec<(usize, Value)>> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the payloads from standard input")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let payload = serde_json::from_str(line).with_context(|| {
                format!("line {} of {} is not valid json", index + 1, path.display())
            })?;
            Ok((index + 1, payload))
        })
        .collect()
}

async fn show_job(file: Option<&Path>, args: &JobArgs) -> anyhow::Result<()> {
    let job = client(file, &args.server.overrides())?.job(args.id).await?;
    output::print(&job, args.output.format())
}

async fn cancel_job(file: Option<&Path>, args: &JobArgs) -> anyhow::Result<()> {
    let job = client(file, &args.server.overrides())?
        .cancel(args.id)
        .await?;
    output::print(&job, args.output.format())
}

async fn retry_job(file: Option<&Path>, args: &JobArgs) -> anyhow::Result<()> {
    let job = client(file, &args.server.overrides())?
        .retry(args.id)
        .await?;
    output::print(&job, args.output.format())
}

async fn set_paused(file: Option<&Path>, args: &CountsArgs, paused: bool) -> anyhow::Result<()> {
    let client = client(file, &args.server.overrides())?;
    let state = if paused {
        client.pause(&args.queue).await?
    } else {
        client.resume(&args.queue).await?
    };
    output::print(&state, args.output.format())
}

async fn counts(file: Option<&Path>, args: &CountsArgs) -> anyhow::Result<()> {
    QueueName::new(&args.queue)?;
    let counts = client(file, &args.server.overrides())?
        .counts(&args.queue)
        .await?;
    output::print(&counts, args.output.format())
}

/// The payload argument as JSON; `-` reads it from standard input.
fn read_payload(argument: &str) -> anyhow::Result<Value> {
    let text = if argument == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the payload from standard input")?;
        text
    } else {
        argument.to_owned()
    };
    serde_json::from_str(&text).context("payload is not valid json")
}

fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("cannot write to standard output")
}

/// `baton config show`: every setting, its value and its source.
fn show_config(file: Option<&Path>, args: &ConfigShowArgs) -> anyhow::Result<()> {
    let settings = config::show(file, &args.serve.overrides())?;
    output::print(settings.as_slice(), args.output)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use baton_memory::MemoryBackend;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn the_bar_of_a_file_counts_its_lines_to_send_and_ends_full_without_drawing() {
        let dir = std::env::temp_dir().join(format!("baton-sending-bar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jobs.jsonl");
        let lines: Vec<String> = (0..1500).map(|n| format!("{{\"n\": {n}}}")).collect();
        std::fs::write(&path, format!("{}\n\n", lines.join("\n"))).unwrap();
        let requests: Vec<EnqueueRequest> = read_payload_lines(&path)
            .unwrap()
            .into_iter()
            .map(|(_, payload)| EnqueueRequest::new("bulk", payload))
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();

        let bar = sending_bar(&requests, ProgressTarget::when_terminal(false));
        assert!(bar.is_hidden(), "nothing is drawn off a terminal");
        assert_eq!(bar.length(), Some(1500), "one per non-blank line");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Client::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve::serve(
            listener,
            Arc::new(MemoryBackend::new()),
            Duration::from_secs(3600),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut ids = Vec::new();
        let sent = send_in_batches(&client, &requests, &bar, &mut ids)
            .await
            .unwrap();
        assert_eq!(sent, 1500);
        assert_eq!(bar.position(), 1500, "two batches moved it to its end");
        assert_eq!(String::from_utf8(ids).unwrap().lines().count(), 1500);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
