//! Run with: `cargo run -p example-workpool -- [--parallel N] [FILE...]`
//!
//! Fetches and hashes a set of files through a work pool, at most N (3 by default) at once.
//! With no files named, it writes a dozen sample files to a scratch directory and adds two
//! that do not exist (a permanent failure: no retry helps) and two "flaky" ones whose first
//! fetch fails (retried after a backoff). Each job's completion callback prints its line; the
//! example ends with a summary and checks that no more than N fetches ever ran at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use baton_memory::MemoryBackend;
use baton_workpool::{
    EnqueueOptions, HandlerError, JobStatus, Outcome, PoolConfig, RetryBehavior, WorkPool,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (parallel, files) = arguments()?;
    let samples = files.is_empty();
    let files = if samples {
        sample_files()?
    } else {
        files.into_iter().map(|path| (path, false)).collect()
    };

    let mut config = PoolConfig::new("hashing")?;
    config.max_parallelism = parallel;
    config.poll_interval = Duration::from_millis(20);
    let pool = WorkPool::new(Arc::new(MemoryBackend::new()), config)?;

    // Counts fetches in flight, to show the limit holds.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (now, most) = (in_flight.clone(), peak.clone());
    pool.register("fetch_and_hash", move |ctx, args| {
        let (now, most) = (now.clone(), most.clone());
        async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(running, Ordering::SeqCst);
            let result = fetch_and_hash(ctx.attempt, &args).await;
            now.fetch_sub(1, Ordering::SeqCst);
            result
        }
    });
    pool.on_complete("print", |completion| async move {
        let path = completion.context["path"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        match completion.outcome {
            Outcome::Succeeded { result } => println!(
                "{}  {path}  ({} attempt{})",
                result.as_str().unwrap_or(""),
                completion.attempts,
                if completion.attempts == 1 { "" } else { "s" }
            ),
            Outcome::Failed { error } => println!("FAILED  {path}: {error}"),
            Outcome::Canceled => println!("CANCELED  {path}"),
        }
        Ok(())
    });
    let member = pool.start();

    let retry = RetryBehavior::new(3, Duration::from_millis(50), 2.0);
    let jobs = pool
        .enqueue_batch(files.iter().map(|(path, flaky)| {
            let path = path.display().to_string();
            let options = EnqueueOptions::new()
                .with_retry(retry)
                .with_name(path.clone())
                .on_complete("print", json!({ "path": path }));
            (
                "fetch_and_hash".to_owned(),
                json!({"path": path, "flaky": flaky}),
                options,
            )
        }))
        .await?;

    // Wait for every job and its callback.
    let (mut hashed, mut failed) = (0, 0);
    for job in &jobs {
        loop {
            if let JobStatus::Finished { outcome, .. } = pool.status(*job).await? {
                match outcome {
                    Outcome::Succeeded { .. } => hashed += 1,
                    _ => failed += 1,
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    while pool.stats().callbacks < jobs.len() as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    member.shutdown().await;

    if samples
        && let Some((first, _)) = files.first()
        && let Some(directory) = first.parent()
    {
        std::fs::remove_dir_all(directory).ok();
    }
    let stats = pool.stats();
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "{hashed} hashed, {failed} failed, {} retried; at most {peak} fetches at once (limit {parallel})",
        stats.retries
    );
    if peak > parallel {
        bail!("{peak} fetches ran at once, more than the limit of {parallel}");
    }
    Ok(())
}

/// Reads the file named in `args` as a slow fetch would, and hashes it. A missing file fails
/// permanently; a flaky one fails its first attempt.
async fn fetch_and_hash(attempt: u32, args: &Value) -> Result<Value, HandlerError> {
    let path = args["path"].as_str().unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(30)).await;
    if args["flaky"].as_bool().unwrap_or(false) && attempt == 1 {
        return Err(HandlerError::retryable("connection reset"));
    }
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HandlerError::permanent("no such file"));
        }
        Err(e) => return Err(HandlerError::retryable(e)),
    };
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Value::String(hex))
}

fn arguments() -> anyhow::Result<(usize, Vec<PathBuf>)> {
    let mut parallel = 3;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--parallel" {
            let value = args.next().context("--parallel needs a number")?;
            parallel = value.parse().context("--parallel needs a number")?;
        } else {
            files.push(PathBuf::from(arg));
        }
    }
    if parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    Ok((parallel, files))
}

/// Twelve sample files in a scratch directory, two missing ones and two flaky ones.
fn sample_files() -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let directory =
        std::env::temp_dir().join(format!("baton-workpool-example-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let mut files = Vec::new();
    for i in 0..12 {
        let path = directory.join(format!("sample-{i:02}.txt"));
        std::fs::write(&path, format!("sample file {i}\n").repeat(100 * (i + 1)))?;
        files.push((path, i % 6 == 5));
    }
    files.push((directory.join("missing-1.txt"), false));
    files.push((directory.join("missing-2.txt"), false));
    Ok(files)
}
