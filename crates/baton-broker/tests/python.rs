//! Workers and a client written in Python with pyzmq (libzmq), from PROTOCOL.md alone, against
//! the broker on the memory backend: another language and another ZeroMQ implementation join
//! by the document.
//!
//! The scripts are in `tests/python/`: `worker_seed.py` sends exactly the seed worker's
//! messages (REQ `ready`, `touch` from a DEALER, `completed` with `"ready": true`, `idle` ping
//! answers, `goodbye` from a new REQ socket, exit on `quit`), and `client.py` checks each
//! client command's reply. They need `python3` on PATH with pyzmq; pyzmq is installed with pip
//! when missing, and the test fails if it cannot be.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use baton_broker::{BrokerConfig, BrokerHandle, BrokerStats, start};
use baton_core::{Backend, JobId, JobState, Queue};
use baton_memory::MemoryBackend;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const PYTHON: &str = "python3";
/// The longest wait for one event from a script, or for a script to exit.
const WAIT: Duration = Duration::from_secs(60);
/// The longest wait for `pip install pyzmq`.
const INSTALL_WAIT: Duration = Duration::from_secs(600);
/// How long a worker waits for a reply on its REQ socket before it gives up (see `shutdown`).
const WORKER_REPLY_TIMEOUT: &str = "10";

fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to its end within `limit`: its exit status and its stdout and stderr.
async fn run(command: &mut Command, limit: Duration) -> Result<(ExitStatus, String), String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("could not start {command:?}: {error}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok((
            output.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )),
        Ok(Err(error)) => Err(format!("waiting for {command:?} failed: {error}")),
        Err(_) => Err(format!("{command:?} did not finish within {limit:?}")),
    }
}

/// Makes sure `python3` can `import zmq`, installing pyzmq with pip if needed; panics with the
/// reason otherwise. Never skips: this test exists to prove the protocol works from Python.
async fn ensure_pyzmq() {
    let import = || {
        let mut command = Command::new(PYTHON);
        command.args([
            "-c",
            "import zmq; print(zmq.pyzmq_version(), zmq.zmq_version())",
        ]);
        command
    };
    match run(&mut import(), WAIT).await {
        Ok((status, _)) if status.success() => return,
        Ok((_, output)) => eprintln!("pyzmq is missing; installing it with pip:\n{output}"),
        Err(error) => panic!("python3 is needed for this test: {error}"),
    }
    match run(
        Command::new(PYTHON).args(["-m", "pip", "install", "--quiet", "pyzmq"]),
        INSTALL_WAIT,
    )
    .await
    {
        Ok((status, _)) if status.success() => {}
        Ok((status, output)) => {
            panic!("`python3 -m pip install --quiet pyzmq` failed ({status}):\n{output}")
        }
        Err(error) => panic!("`python3 -m pip install --quiet pyzmq` failed: {error}"),
    }
    match run(&mut import(), WAIT).await {
        Ok((status, _)) if status.success() => {}
        Ok((status, output)) => {
            panic!("pyzmq was installed but `import zmq` still fails ({status}):\n{output}")
        }
        Err(error) => panic!("`import zmq` failed after installing pyzmq: {error}"),
    }
}

/// A Python script running as a child process; its stdout is one JSON event per line.
struct Script {
    name: String,
    child: Child,
    events: mpsc::UnboundedReceiver<String>,
    stderr: JoinHandle<String>,
    seen: Vec<Value>,
}

impl Script {
    fn spawn(name: &str, file: &str, args: &[String]) -> Self {
        let mut child = Command::new(PYTHON)
            .arg(script(file))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{name}: could not start python3 {file}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Self {
            name: name.to_owned(),
            child,
            events,
            stderr,
            seen: Vec::new(),
        }
    }

    fn parse(&self, line: &str) -> Value {
        serde_json::from_str(line).unwrap_or_else(|error| {
            panic!("{}: stdout line is not JSON ({error}): {line}", self.name)
        })
    }

    /// Reads events until one with `"event": event` arrives, within `WAIT`.
    async fn wait_for(&mut self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    let stderr = self.stderr_now().await;
                    panic!(
                        "{}: exited before reporting {event:?}; events {:?}; stderr:\n{stderr}",
                        self.name, self.seen
                    )
                }
                Err(_) => panic!(
                    "{}: no {event:?} event within {WAIT:?}; events {:?}",
                    self.name, self.seen
                ),
            };
            let value = self.parse(&line);
            self.seen.push(value.clone());
            if value["event"] == event {
                return value;
            }
        }
    }

    async fn stderr_now(&mut self) -> String {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        match tokio::time::timeout(Duration::from_secs(5), &mut self.stderr).await {
            Ok(Ok(text)) => text,
            _ => "(stderr unavailable)".to_owned(),
        }
    }

    /// Waits (within `WAIT`) for the script to exit and returns every stdout line it printed,
    /// parsed; an error says why it did not exit 0 in time, with its events and stderr.
    async fn finish(mut self) -> Result<Vec<Value>, String> {
        let status = match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => return Err(format!("{}: wait: {error}", self.name)),
            Err(_) => {
                let _ = self.child.kill().await;
                let stderr = self.stderr_now().await;
                return Err(format!(
                    "{}: did not exit within {WAIT:?}; events {:?}; stderr:\n{stderr}",
                    self.name, self.seen
                ));
            }
        };
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.events.recv()).await
        {
            let value = self.parse(&line);
            self.seen.push(value);
        }
        let stderr = self.stderr_now().await;
        if !status.success() {
            return Err(format!(
                "{}: exited with {status}; events {:?}; stderr:\n{stderr}",
                self.name, self.seen
            ));
        }
        if !stderr.trim().is_empty() {
            eprintln!("{} stderr:\n{stderr}", self.name);
        }
        Ok(self.seen)
    }
}

/// Each script's events, once all of them exited 0; else a panic with every failure.
fn all_ok<const N: usize>(finished: [Result<Vec<Value>, String>; N]) -> [Vec<Value>; N] {
    let failures: Vec<&String> = finished.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    finished.map(|r| r.expect("checked"))
}

fn exit_event<'a>(name: &str, events: &'a [Value]) -> &'a Value {
    let exit = events.last().expect("events");
    assert_eq!(
        exit["event"], "exit",
        "{name}: the last event is not its exit: {events:?}"
    );
    exit
}

fn worker_args(endpoint: &str, queue: &str, name: &str, max_jobs: u32) -> Vec<String> {
    [
        "--endpoint",
        endpoint,
        "--queue",
        queue,
        "--name",
        name,
        "--max-jobs",
        &max_jobs.to_string(),
        "--reply-timeout",
        WORKER_REPLY_TIMEOUT,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_job(backend: &MemoryBackend, id: &str) -> baton_core::Job {
    let id: JobId = id.parse().expect("a job id");
    backend
        .get(id)
        .await
        .expect("backend get")
        .unwrap_or_else(|| panic!("job {id} is not in the backend"))
}

/// The workers' results by job id, as they reported them.
fn results(events: &[Value]) -> BTreeMap<String, Value> {
    let exit = events.last().expect("events");
    exit["results"]
        .as_object()
        .expect("results")
        .iter()
        .map(|(id, result)| (id.clone(), result.clone()))
        .collect()
}

#[tokio::test]
async fn python_seed_workers_and_client_talk_to_the_broker() {
    ensure_pyzmq().await;
    let backend = Arc::new(MemoryBackend::new());
    let shared: Arc<dyn Backend> = backend.clone();
    let broker: BrokerHandle = start(
        shared,
        BrokerConfig {
            endpoint: "tcp://127.0.0.1:0".into(),
            quit_token: Some("py-secret".into()),
            idle_ping_interval: Duration::from_millis(300),
            ..BrokerConfig::default()
        },
    )
    .await
    .expect("broker starts");
    let endpoint = broker.endpoint().to_owned();

    // Worker A serves py-a alone and leaves with goodbye after its 4 jobs: no other job of
    // py-a exists, so none is handed to it in between. Worker B serves py-b until the broker
    // stops and sends it quit.
    const A_JOBS: u32 = 4;
    const B_JOBS: u32 = 5;
    let a_name = "py-seed:host:1:0";
    let b_name = "py-seed:host:2:0";
    let mut worker_a = Script::spawn(
        "worker A",
        "worker_seed.py",
        &worker_args(&endpoint, "py-a", a_name, A_JOBS),
    );
    let mut worker_b = Script::spawn(
        "worker B",
        "worker_seed.py",
        &worker_args(&endpoint, "py-b", b_name, 0),
    );
    // Both wait with nothing to do, so each is pinged and answers before any job exists.
    worker_a.wait_for("ping").await;
    worker_b.wait_for("ping").await;

    let client = Script::spawn(
        "client",
        "client.py",
        &[
            "--endpoint",
            &endpoint,
            "--queue",
            &format!("py-a={A_JOBS}"),
            "--queue",
            &format!("py-b={B_JOBS}"),
            "--fail-queue",
            "py-b",
            "--idle-queue",
            "py-nobody",
            "--expect-worker",
            &format!("py-b={b_name}"),
        ]
        .map(str::to_owned),
    );

    // Waited for together, so that a failure of either is reported with both outputs.
    let (client_done, a_done) = tokio::join!(client.finish(), worker_a.finish());
    let [client_events, a_events] = all_ok([client_done, a_done]);
    let a_exit = exit_event("worker A", &a_events);
    assert_eq!(a_exit["stopped"], "goodbye", "worker A: {a_exit}");
    assert_eq!(a_exit["jobs"], A_JOBS, "worker A: {a_exit}");
    assert_eq!(
        a_exit["touches"], A_JOBS,
        "worker A: every job touched: {a_exit}"
    );
    assert!(a_exit["pings"].as_u64() >= Some(1), "worker A: {a_exit}");

    let summary = client_events.last().expect("the client's summary");
    assert_eq!(summary["ok"], true, "client: {summary}");
    let expected: BTreeMap<String, Value> = summary["jobs"]
        .as_object()
        .expect("jobs")
        .iter()
        .map(|(id, result)| (id.clone(), result.clone()))
        .collect();
    assert_eq!(expected.len(), (A_JOBS + B_JOBS) as usize, "{summary}");

    // Every sum job succeeded once, with the sum the worker computed from its parameters.
    for (id, result) in &expected {
        let job = stored_job(&backend, id).await;
        assert_eq!(job.state, JobState::Succeeded, "job {id}: {job:?}");
        assert_eq!(job.result.as_ref(), Some(result), "job {id}: {job:?}");
        assert_eq!(job.attempts, 1, "job {id}: {job:?}");
        let parameters = job.payload["parameters"].as_array().expect("parameters");
        let sum: i64 = parameters
            .iter()
            .map(|n| n.as_i64().expect("integer"))
            .sum();
        assert_eq!(result, &json!(sum), "job {id}: {job:?}");
    }
    // Worker A ran exactly the py-a jobs.
    for (id, result) in results(&a_events) {
        assert_eq!(expected.get(&id), Some(&result), "worker A's job {id}");
        assert_eq!(stored_job(&backend, &id).await.queue.as_str(), "py-a");
    }
    let failed_id = summary["failed_job"].as_str().expect("failed_job");
    let failed = stored_job(&backend, failed_id).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    assert_eq!(
        failed.error.as_deref(),
        Some(r#"refused: ["no"]"#),
        "{failed:?}"
    );
    assert_eq!(failed.attempts, 1, "retry_count 0: {failed:?}");
    let canceled_id = summary["canceled_job"].as_str().expect("canceled_job");
    let canceled = stored_job(&backend, canceled_id).await;
    assert_eq!(canceled.state, JobState::Canceled, "{canceled:?}");
    assert_eq!(canceled.attempts, 0, "{canceled:?}");

    let stats = broker.stats();
    let jobs_run = u64::from(A_JOBS + B_JOBS) + 1;
    assert_eq!(BrokerStats::get(&stats.dispatched), jobs_run);
    wait_until("every completion to be recorded", || {
        BrokerStats::get(&stats.completed) >= jobs_run
    })
    .await;
    assert_eq!(BrokerStats::get(&stats.rejected_completions), 0);
    assert_eq!(BrokerStats::get(&stats.malformed), 0);
    assert_eq!(BrokerStats::get(&stats.dropped_replies), 0);
    // Worker A's goodbye dropped its connection; nobody else was lost.
    assert_eq!(BrokerStats::get(&stats.workers_lost), 1);

    tokio::time::timeout(WAIT, broker.shutdown())
        .await
        .expect("the broker stops in time")
        .expect("clean shutdown");

    let [b_events] = all_ok([worker_b.finish().await]);
    let b_exit = exit_event("worker B", &b_events);
    match b_exit["stopped"].as_str() {
        Some("quit") => {}
        // PROTOCOL.md: quit goes to waiting workers, not to one answering an idle ping. A
        // broker that stops between sending a ping and reading its answer leaves the worker
        // waiting for a reply that never comes; the worker gives up after its reply timeout.
        Some("no reply") => {
            let before = &b_events[b_events.len() - 2];
            assert_eq!(
                before["event"], "ping",
                "worker B got no quit, and not because it was answering a ping: {b_events:?}"
            );
            eprintln!("worker B was answering an idle ping when the broker stopped");
        }
        _ => panic!("worker B stopped unexpectedly: {b_exit}"),
    }
    assert_eq!(b_exit["jobs"], B_JOBS + 1, "worker B: {b_exit}");
    assert_eq!(b_exit["touches"], B_JOBS + 1, "worker B: {b_exit}");
    assert!(b_exit["pings"].as_u64() >= Some(1), "worker B: {b_exit}");
    let b_results = results(&b_events);
    assert_eq!(b_results.len(), (B_JOBS + 1) as usize, "{b_exit}");
    for (id, result) in b_results {
        if id == failed_id {
            assert_eq!(result, json!(r#"refused: ["no"]"#));
        } else {
            assert_eq!(expected.get(&id), Some(&result), "worker B's job {id}");
            assert_eq!(stored_job(&backend, &id).await.queue.as_str(), "py-b");
        }
    }
}
