//! Run with: `cargo run -p example-broker -- [--workers N]`
//!
//! Counts the words of a handful of texts through Baton's job broker over ZeroMQ. The example
//! starts a broker in-process on the memory backend, bound to a free loopback port, and N
//! workers (3 by default) that connect to it over TCP with the `Worker` library. A `Client`
//! then enqueues one job per text and waits for each result. One text sits on a flaky store,
//! so the first attempt at it fails and the broker retries it; another is an image with no text
//! at all, which its worker fails for good, without a retry. The example prints a line per job
//! and a summary, stops the workers and the broker, and exits non-zero unless every job ended
//! exactly once with the counts its text gives.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use baton_broker::{BrokerConfig, BrokerStats, Client, JobContext, Outcome, Worker, start};
use baton_memory::MemoryBackend;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

/// The queue the workers serve.
const QUEUE: &str = "word-counts";

/// The longest any one step (a job's result, a worker or the broker stopping) may take.
const WAIT: Duration = Duration::from_secs(10);

/// The texts to count. `None` is a file with no text in it.
const TEXTS: &[Text] = &[
    Text {
        title: "ozymandias.txt",
        body: Some(
            "I met a traveller from an antique land, who said: Two vast and trunkless legs of \
             stone stand in the desert. Near them, on the sand, half sunk, a shattered visage lies",
        ),
        flaky: false,
    },
    Text {
        title: "the-tyger.txt",
        body: Some(
            "Tyger Tyger, burning bright, in the forests of the night; what immortal hand or \
             eye, could frame thy fearful symmetry?",
        ),
        flaky: false,
    },
    Text {
        title: "sonnet-18.txt",
        body: Some(
            "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: \
             rough winds do shake the darling buds of May, and summer's lease hath all too \
             short a date",
        ),
        flaky: false,
    },
    Text {
        title: "jabberwocky.txt",
        body: Some(
            "'Twas brillig, and the slithy toves did gyre and gimble in the wabe: all mimsy \
             were the borogoves, and the mome raths outgrabe.",
        ),
        flaky: true,
    },
    Text {
        title: "daffodils.txt",
        body: Some(
            "I wandered lonely as a cloud that floats on high o'er vales and hills, when all at \
             once I saw a crowd, a host, of golden daffodils",
        ),
        flaky: false,
    },
    Text {
        title: "the-raven.txt",
        body: Some(
            "Once upon a midnight dreary, while I pondered, weak and weary, over many a quaint \
             and curious volume of forgotten lore",
        ),
        flaky: false,
    },
    Text {
        title: "cover.jpg",
        body: None,
        flaky: false,
    },
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let workers = arguments()?;

    // Port 0: the broker binds a free port itself and reports it, so nothing can take the
    // port between picking it and binding it.
    let config = BrokerConfig {
        endpoint: "tcp://127.0.0.1:0".to_owned(),
        // Look again soon for retries that became due.
        poll_interval: Duration::from_millis(50),
        ..BrokerConfig::default()
    };
    let broker = start(Arc::new(MemoryBackend::new()), config).await?;
    let endpoint = broker.endpoint().to_owned();
    println!("broker listening on {endpoint}");

    let runs = Runs::default();
    let handles: Vec<_> = (1..=workers)
        .map(|n| {
            let name = format!("counter-{n}");
            let runs = runs.clone();
            Worker::new(&endpoint, QUEUE)
                .name(&name)
                .spawn(move |job| count_words_job(name.clone(), runs.clone(), job))
        })
        .collect();

    let mut client = Client::new(&endpoint).with_timeout(WAIT);
    let mut jobs = Vec::new();
    for text in TEXTS {
        let id = client
            .enqueue(job_for(text))
            .await
            .with_context(|| format!("enqueueing {}", text.title))?;
        jobs.push((text, id));
    }

    // One line per result, in the order the jobs were enqueued.
    let mut problems = Vec::new();
    let (mut counted, mut failed, mut retried) = (0, 0, 0);
    for (text, id) in &jobs {
        let reply = client
            .notify(id, WAIT)
            .await
            .with_context(|| format!("waiting for job {id} ({})", text.title))?;
        let job = &reply["job"];
        let attempts = job["attempts"].as_u64().unwrap_or(0);
        match reply["status"].as_str() {
            Some("completed") => counted += 1,
            Some("failed") => failed += 1,
            _ => {}
        }
        if attempts > 1 {
            retried += 1;
        }
        println!("{}", describe(text, id, &reply));
        problems.extend(check_result(text, id, &reply));
        problems.extend(check_runs(text, id, attempts, &runs.of(id)));
    }

    // The broker counts a job's terminal change just after it records it, which can come a
    // moment after the client hears of it.
    let stats = broker.stats();
    let total = jobs.len() as u64;
    let deadline = Instant::now() + WAIT;
    while BrokerStats::get(&stats.completed) < total {
        if Instant::now() >= deadline {
            bail!(
                "the broker recorded {} of {total} jobs as ended",
                BrokerStats::get(&stats.completed)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for handle in handles {
        timeout(WAIT, handle.stop())
            .await
            .context("a worker did not stop in time")?;
    }
    let ended = BrokerStats::get(&stats.completed);
    let dispatched = BrokerStats::get(&stats.dispatched);
    let rejected = BrokerStats::get(&stats.rejected_completions);
    timeout(WAIT, broker.shutdown())
        .await
        .context("the broker did not stop in time")??;

    let run_count = runs.count();
    println!(
        "{counted} counted, {failed} failed, {retried} retried; {run_count} runs on {workers} \
         worker{}; broker stopped",
        if workers == 1 { "" } else { "s" }
    );

    if ended != total {
        problems.push(format!(
            "the broker recorded {ended} terminal changes for {total} jobs"
        ));
    }
    if dispatched != run_count as u64 {
        problems.push(format!(
            "the broker handed out {dispatched} jobs but the workers ran {run_count}"
        ));
    }
    if rejected != 0 {
        problems.push(format!("the broker rejected {rejected} completions"));
    }
    if !problems.is_empty() {
        bail!("invariants broken:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// A text to count, as the client knows it.
struct Text {
    /// The file it came from.
    title: &'static str,
    /// Its words, or `None` for a file with no text.
    body: Option<&'static str>,
    /// Whether the first attempt at it fails, as a flaky store would.
    flaky: bool,
}

/// The job that counts `text`: two retries allowed, 50 ms apart at first.
fn job_for(text: &Text) -> Value {
    json!({
        "queue": QUEUE,
        "target": "Texts",
        "method": "count_words",
        "parameters": {"title": text.title, "text": text.body, "flaky": text.flaky},
        "timeout": 5,
        "retry_count": 2,
        "retry_delay": 0.05,
    })
}

/// Counts the words of a job's text, as worker `name`. The first attempt at a flaky text fails
/// (the broker retries it); a text that is not there fails for good.
async fn count_words_job(name: String, runs: Runs, job: JobContext) -> Outcome {
    let parameters = job.parameters();
    let title = parameters["title"].as_str().unwrap_or("?");
    let outcome = if parameters["flaky"] == true && job.attempt == 1 {
        Outcome::Failure(json!("the text store timed out"))
    } else if let Some(text) = parameters["text"].as_str() {
        let (words, distinct) = count_words(text);
        Outcome::Success(json!({"words": words, "distinct": distinct, "worker": name}))
    } else {
        Outcome::Fatal(json!(format!("{title} has no text to count")))
    };
    runs.record(&job.id, job.attempt, &outcome);
    outcome
}

/// How many words a text has, and how many of them differ (ignoring case and punctuation).
fn count_words(text: &str) -> (usize, usize) {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| {
            word.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|word| !word.is_empty())
        .collect();
    let distinct: HashSet<&String> = words.iter().collect();
    (words.len(), distinct.len())
}

/// How a worker's run of a job ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    /// It counted the words.
    Succeeded,
    /// It failed; the job may run again.
    Retryable,
    /// It failed for good.
    Fatal,
}

/// The runs of each job (by id), in the order they ended: the attempt and how it ended.
type RunsByJob = HashMap<String, Vec<(u64, Ending)>>;

/// Every run of every job as the workers saw it, shared by the workers and the checks.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<RunsByJob>>);

impl Runs {
    /// Notes that attempt `attempt` of job `id` ended with `outcome`.
    fn record(&self, id: &str, attempt: u64, outcome: &Outcome) {
        let ending = match outcome {
            Outcome::Success(_) => Ending::Succeeded,
            Outcome::Failure(_) => Ending::Retryable,
            Outcome::Fatal(_) => Ending::Fatal,
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .push((attempt, ending));
    }

    /// The runs of job `id`, in the order they ended.
    fn of(&self, id: &str) -> Vec<(u64, Ending)> {
        let runs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        runs.get(id).cloned().unwrap_or_default()
    }

    /// How many runs there were in all.
    fn count(&self) -> usize {
        let runs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        runs.values().map(Vec::len).sum()
    }
}

/// The line printed for a job's result.
fn describe(text: &Text, id: &str, reply: &Value) -> String {
    let job = &reply["job"];
    let attempts = job["attempts"].as_u64().unwrap_or(0);
    let tries = format!("{attempts} attempt{}", if attempts == 1 { "" } else { "s" });
    match reply["status"].as_str() {
        Some("completed") => {
            let result = &job["result"];
            format!(
                "job {id}  {}: {} words, {} distinct ({}, {tries})",
                text.title,
                result["words"],
                result["distinct"],
                result["worker"].as_str().unwrap_or("?")
            )
        }
        Some("failed") => format!(
            "job {id}  {}: FAILED after {tries}: {}",
            text.title,
            job["error"].as_str().unwrap_or("?")
        ),
        _ => format!("job {id}  {}: ended {}", text.title, reply["status"]),
    }
}

/// What is wrong with a job's result, given the text it was for.
fn check_result(text: &Text, id: &str, reply: &Value) -> Vec<String> {
    let job = &reply["job"];
    let mut problems = Vec::new();
    if job["parameters"]["title"] != text.title {
        problems.push(format!(
            "job {id} came back as {}, not {}",
            job["parameters"]["title"], text.title
        ));
    }
    match text.body {
        Some(body) => {
            let (words, distinct) = count_words(body);
            if reply["status"] != "completed" {
                problems.push(format!(
                    "job {id} ({}) ended {}, not completed",
                    text.title, reply["status"]
                ));
            } else if job["result"]["words"] != words || job["result"]["distinct"] != distinct {
                problems.push(format!(
                    "job {id} ({}) counted {}, but the text has {words} words, {distinct} distinct",
                    text.title, job["result"]
                ));
            }
        }
        None => {
            if reply["status"] != "failed" {
                problems.push(format!(
                    "job {id} ({}) ended {}, not failed",
                    text.title, reply["status"]
                ));
            }
        }
    }
    problems
}

/// What is wrong with the runs of a job: each attempt must run once, in order, and only the
/// last may end it.
fn check_runs(text: &Text, id: &str, attempts: u64, runs: &[(u64, Ending)]) -> Vec<String> {
    let expected: &[Ending] = match (text.body, text.flaky) {
        (None, _) => &[Ending::Fatal],
        (Some(_), true) => &[Ending::Retryable, Ending::Succeeded],
        (Some(_), false) => &[Ending::Succeeded],
    };
    let expected: Vec<(u64, Ending)> = (1..).zip(expected.iter().copied()).collect();
    let mut problems = Vec::new();
    if runs != expected {
        problems.push(format!(
            "job {id} ({}) ran as {runs:?}, not {expected:?}",
            text.title
        ));
    }
    if attempts != expected.len() as u64 {
        problems.push(format!(
            "job {id} ({}) took {attempts} attempts, not {}",
            text.title,
            expected.len()
        ));
    }
    problems
}

/// The number of workers, from `--workers N` (3 by default).
fn arguments() -> anyhow::Result<usize> {
    let mut workers = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => {
                let value = args.next().context("--workers needs a number")?;
                workers = value.parse().context("--workers needs a number")?;
            }
            other => bail!("unknown option {other}"),
        }
    }
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    Ok(workers)
}
