//! `baton worker` and `baton wait`: the broker from the command line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use baton_broker::{Client, JobContext, Outcome, Worker};
use clap::Args;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::cli::parse_duration;
use crate::config::{self, ConfigOverrides};

/// Flags of `baton worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The broker's endpoint [config: broker.endpoint, default: tcp://127.0.0.1:5555]
    #[arg(long, value_name = "ENDPOINT")]
    pub broker: Option<String>,
    /// The queue to take jobs from
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// How many jobs run at once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// The worker's name, as the broker's status shows it [default: baton:HOST:PID]
    #[arg(long)]
    pub name: Option<String>,
    /// How long a waiting worker hears nothing from the broker before it reconnects (the
    /// broker pings waiting workers every 10 s), e.g. 30s
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub reply_timeout: Duration,
    /// The command run for each job: the job (JSON) on its stdin, its id in BATON_JOB_ID, its
    /// fencing token in BATON_FENCING_TOKEN and, when traced, its execution span in
    /// TRACEPARENT; exit status 0 and its stdout (JSON if it parses, else text) are the result;
    /// any other status fails the job
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Flags of `baton wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The job's id
    pub id: String,
    /// The broker's endpoint [config: broker.endpoint, default: tcp://127.0.0.1:5555]
    #[arg(long, value_name = "ENDPOINT")]
    pub broker: Option<String>,
    /// How long to wait, e.g. 30s or 10m
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn endpoint(file: Option<&Path>, flag: Option<&String>) -> anyhow::Result<String> {
    match flag {
        Some(endpoint) => Ok(endpoint.clone()),
        None => Ok(config::load(file, &ConfigOverrides::default())?
            .broker
            .endpoint),
    }
}

/// Runs `args.command` for each job until SIGINT/SIGTERM or the broker's `quit`.
///
/// # Errors
///
/// The configuration cannot be read.
pub async fn run_worker(file: Option<&Path>, args: WorkerArgs) -> anyhow::Result<()> {
    let endpoint = endpoint(file, args.broker.as_ref())?;
    tracing::info!(%endpoint, queue = %args.queue, "baton worker running {:?}", args.command);
    let mut worker = Worker::new(endpoint, &args.queue)
        .concurrency(args.concurrency as usize)
        .reply_timeout(args.reply_timeout);
    if let Some(name) = args.name {
        worker = worker.name(name);
    }
    let command = std::sync::Arc::new(args.command);
    worker
        .run(move |job| {
            let command = command.clone();
            async move { run_job(&command, job).await }
        })
        .await;
    Ok(())
}

/// Runs the command for one job; a canceled job's process is killed.
async fn run_job(command: &[String], job: JobContext) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::Fatal(json!("no command to run"));
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("BATON_JOB_ID", &job.id)
        .env(
            "BATON_FENCING_TOKEN",
            job.token.map(|t| t.to_string()).unwrap_or_default(),
        )
        // The job's execution span, for a command that traces its own work (the environment
        // carrier convention of OpenTelemetry).
        .envs(baton_trace::current().map(|parent| ("TRACEPARENT", parent.to_string())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => return Outcome::Failure(json!(format!("cannot start {program}: {error}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let input = job.job.to_string();
        // A command that does not read its input is not an error.
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let output = tokio::select! {
        output = child.wait_with_output() => output,
        () = job.canceled() => return Outcome::Fatal(json!("canceled")),
    };
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let result = serde_json::from_str::<Value>(text.trim())
                .unwrap_or_else(|_| Value::String(text.trim_end().to_owned()));
            Outcome::Success(result)
        }
        Ok(output) => Outcome::Failure(json!({
            "class": "ExitStatus",
            "message": format!("{program} exited with {}", output.status),
            "exit_code": output.status.code(),
            "stderr": String::from_utf8_lossy(&output.stderr).trim_end(),
        })),
        Err(error) => Outcome::Failure(json!(format!("waiting for {program}: {error}"))),
    }
}

/// Waits until job `args.id` ends and prints the broker's reply; fails unless it succeeded.
///
/// # Errors
///
/// The job failed or was canceled, is unknown, or did not end in time.
pub async fn wait(file: Option<&Path>, args: WaitArgs) -> anyhow::Result<()> {
    let endpoint = endpoint(file, args.broker.as_ref())?;
    let mut client = Client::new(&endpoint);
    let reply = client
        .notify(&args.id, args.timeout)
        .await
        .with_context(|| format!("waiting for job {} at {endpoint}", args.id))?;
    println!("{}", serde_json::to_string_pretty(&reply["job"])?);
    match reply["status"].as_str() {
        Some("completed") => Ok(()),
        Some(status) => bail!("job {} {status}", args.id),
        None => bail!("unexpected reply: {reply}"),
    }
}
