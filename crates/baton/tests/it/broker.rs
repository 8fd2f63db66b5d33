//! The broker as separate processes: `baton serve` with `[broker]` enabled on a SQLite file,
//! four `baton worker` processes, a client, and a REQ peer that completes too late.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use baton_broker::Client;
use baton_zmq::Requester;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::support::temp_dir;

const BATON: &str = env!("CARGO_BIN_EXE_baton");
const WAIT: Duration = Duration::from_secs(60);
/// Jobs with "slow" in them take 2 s; the rest answer at once.
const WORK: &str = r#"input=$(cat); case "$input" in *slow*) sleep 2;; esac; printf '"ok"'"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &Path, log: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Command::new(BATON)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // A group of its own, so that SIGKILL reaches the process and what it runs.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn serve(dir: &Path, endpoint: &str, log: &str) -> Child {
    serve_on(dir, endpoint, &format!("127.0.0.1:{}", free_port()), log)
}

/// `baton serve` with its broker on `endpoint` and its HTTP API on `listen`.
fn serve_on(dir: &Path, endpoint: &str, listen: &str, log: &str) -> Child {
    let backend = format!("sqlite://{}", dir.join("baton.db").display());
    spawn(
        dir,
        log,
        &["serve", "--backend", &backend, "--listen", listen],
        &[
            ("BATON_BROKER__ENABLED", "true"),
            ("BATON_BROKER__ENDPOINT", endpoint),
            ("BATON_BROKER__JOB_TIMEOUT", "3s"),
        ],
    )
}

fn worker(dir: &Path, endpoint: &str, n: usize) -> Child {
    let name = format!("w{n}");
    spawn(
        dir,
        &format!("{name}.log"),
        &[
            "worker",
            "--broker",
            endpoint,
            "--queue",
            "q",
            "--concurrency",
            "2",
            "--name",
            &name,
            "--reply-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            WORK,
        ],
        &[],
    )
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sends SIGTERM to `child` and waits, bounded, for it to exit successfully.
async fn stop(child: &mut Child, what: &str) {
    signal(child, "TERM");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{what}: {status}");
}

/// Enqueues `job`, asking again after a transport error (the broker restarting).
async fn enqueue(client: &mut Client, job: Value) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.enqueue(job.clone()).await {
            Ok(id) => return id,
            Err(error) => {
                assert!(Instant::now() < deadline, "enqueue kept failing: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn fetch(client: &mut Client, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.fetch(id).await {
            Ok(job) => return job,
            Err(error) => {
                assert!(Instant::now() < deadline, "fetch kept failing: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until job `id` is in progress and returns the name of the worker running it.
async fn running_on(client: &mut Client, id: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = client.status().await.unwrap();
        let busy = status["queues"]["q"]
            .as_object()
            .into_iter()
            .flat_map(|workers| workers.values())
            .find(|worker| worker["job_id"] == id);
        if let Some(worker) = busy {
            return worker["name"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "job {id} never ran: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_survive_a_killed_worker_a_killed_broker_and_a_late_completion() {
    let dir = temp_dir("broker-processes");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut broker = serve(&dir, &endpoint, "serve-1.log");
    let mut client = Client::new(&endpoint).with_timeout(Duration::from_secs(2));

    // A worker that takes a job and answers after its timeout: the job runs elsewhere.
    let late = enqueue(
        &mut client,
        json!({"queue": "q", "timeout": 1, "retry_count": 2, "retry_delay": 0.01}),
    )
    .await;
    let mut laggard = Requester::new(&endpoint);
    let ready = json!({"command": "ready", "queue": "q", "worker_name": "laggard"});
    let job = laggard
        .request(Bytes::from(ready.to_string()), Some(WAIT))
        .await
        .unwrap();
    let job: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(job["job_id"], json!(late));

    let mut workers: Vec<Child> = (0..4).map(|n| worker(&dir, &endpoint, n)).collect();
    let reply = client.notify(&late, WAIT).await.unwrap();
    assert_eq!(reply["status"], "completed", "{reply}");
    assert_eq!(reply["job"]["result"], "ok");
    let stale = json!({"command": "completed", "ready": false, "job_id": late, "result": "stale", "status": "success"});
    let thanks = laggard
        .request(Bytes::from(stale.to_string()), Some(WAIT))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&thanks).unwrap()["status"],
        "thanks"
    );

    // A worker SIGKILLed in the middle of a job: another finishes it.
    let slow = enqueue(&mut client, json!({"queue": "q", "parameters": ["slow"]})).await;
    let name = running_on(&mut client, &slow).await;
    let victim: usize = name[1..name.find(':').unwrap()].parse().unwrap();
    signal(&workers[victim], "KILL");
    let _ = workers[victim].wait().await;

    let mut ids = vec![late.clone(), slow.clone()];
    for n in 0..500 {
        ids.push(enqueue(&mut client, json!({"queue": "q", "parameters": [n]})).await);
    }
    // The broker SIGKILLed mid-run, and started again on the same file and endpoint.
    signal(&broker, "KILL");
    let _ = broker.wait().await;
    broker = serve(&dir, &endpoint, "serve-2.log");
    for n in 500..998 {
        ids.push(enqueue(&mut client, json!({"queue": "q", "parameters": [n]})).await);
    }
    assert_eq!(ids.len(), 1000);

    for id in &ids {
        let job = loop {
            let job = fetch(&mut client, id).await;
            if job["status"] == "completed" {
                break job;
            }
            assert!(
                !["failed", "canceled"].contains(&job["status"].as_str().unwrap_or_default()),
                "job {id} ended badly: {job}"
            );
            let _ = client.notify(id, Duration::from_secs(5)).await;
        };
        assert_eq!(job["result"], "ok", "job {id}: {job}");
    }
    let slow_job = fetch(&mut client, &slow).await;
    assert!(slow_job["attempts"].as_u64() >= Some(2), "{slow_job}");
    let late_job = fetch(&mut client, &late).await;
    assert_eq!(
        late_job["result"], "ok",
        "the late completion was applied: {late_job}"
    );

    // A graceful stop sends quit to the waiting workers, which exit on their own.
    stop(&mut broker, "baton serve").await;
    for (n, worker) in workers.iter_mut().enumerate() {
        if n == victim {
            continue;
        }
        let status = tokio::time::timeout(WAIT, worker.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "worker {n}: {status}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn connected_workers_are_listed_over_http_and_by_baton_workers_until_they_leave() {
    let dir = temp_dir("broker-roster");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let mut broker = serve_on(&dir, &endpoint, &listen, "serve.log");
    let mut worker = worker(&dir, &endpoint, 1);

    // `--concurrency 2`: one connection per slot, named after the worker and the slot.
    let listed = roster_until(&server, |workers| workers.len() == 2).await;
    assert_eq!(listed["broker"], true);
    let rows: Vec<(&str, &str, &str)> = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let field = |name: &str| w[name].as_str().unwrap_or_default();
            (field("name"), field("queue"), field("state"))
        })
        .collect();
    assert_eq!(
        rows,
        [("w1:0", "q", "waiting"), ("w1:1", "q", "waiting")],
        "{listed}"
    );

    let printed = Command::new(BATON)
        .args(["workers", "--server", &server, "--output", "json"])
        .env_clear()
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(
        printed["workers"], listed["workers"],
        "baton workers prints the same list"
    );

    stop(&mut worker, "baton worker").await;
    roster_until(&server, |workers| workers.is_empty()).await;

    stop(&mut broker, "baton serve").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `GET /api/v1/workers` until its workers satisfy `check` (bounded); returns the answer.
async fn roster_until(server: &str, check: impl Fn(&Vec<Value>) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        // The server may still be starting: connection errors are retried.
        if let Ok(response) = reqwest::get(format!("{server}/api/v1/workers")).await {
            let listed: Value = response.json().await.unwrap();
            if check(listed["workers"].as_array().unwrap()) {
                return listed;
            }
            assert!(
                Instant::now() < deadline,
                "the workers never matched: {listed}"
            );
        }
        assert!(Instant::now() < deadline, "{server} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
