//! The real `baton` binary: `serve` as a child process, driven by `enqueue` and `job`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use baton::client::Client;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::support::{temp_dir, wait_until_healthy};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// A `baton` command isolated from this process: no inherited environment (tests elsewhere in
/// this binary set `BATON_*` variables) and its own empty working directory (so no stray
/// `baton.toml` is read).
pub(crate) fn baton(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BATON);
    command
        .args(args)
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

pub(crate) async fn run(dir: &Path, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), baton(dir, args).output())
        .await
        .expect("a baton command finishes within 60s")
        .unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Sends SIGTERM to `child` and waits, bounded, for it to exit; returns its output.
pub(crate) async fn terminate(mut child: Child) -> Output {
    let pid = child.id().expect("the server is still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid} failed");
    let mut stderr_text = Vec::new();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::io::copy(&mut stderr_pipe, &mut stderr_text)
            .await
            .unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("the server exits within 10s of SIGTERM");
    Output {
        status: exit,
        stdout: Vec::new(),
        stderr: stderr_text,
    }
}

/// Starts `baton serve` in `dir` on `backend` (a URL) with `env` added, its standard error
/// piped, and waits until it answers; returns it and its base URL.
pub(crate) async fn serve_in(dir: &Path, backend: &str, env: &[(&str, &str)]) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let mut serve = baton(dir, &["serve", "--backend", backend, "--listen", &listen]);
    let serve = serve
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_healthy(&Client::new(&server).unwrap(), Duration::from_secs(20)).await;
    (serve, server)
}

/// Makes `owner` the leader of master `name` on `backend`, for ten minutes.
pub(crate) async fn lead(backend: &dyn baton_core::Backend, name: &str, owner: &str) {
    let leader =
        baton_core::LockName::new(format!("{}{name}", baton_master::LEADER_PREFIX)).unwrap();
    let owner = baton_core::Owner::new(owner).unwrap();
    let request = baton_core::LockRequest::new([leader], owner, Duration::from_secs(600)).unwrap();
    assert!(matches!(
        backend.acquire(&request).await.unwrap(),
        baton_core::Acquire::Granted(_)
    ));
}

pub(crate) struct Scratch(pub(crate) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn serve_enqueue_and_job_work_together_and_serve_stops_cleanly_on_sigterm() {
    let dir = Scratch(temp_dir("cli"));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = format!("http://{listen}");
    let child = baton(&dir.0, &["serve", "--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_healthy(&Client::new(&server).unwrap(), Duration::from_secs(10)).await;

    let payload = json!({"to": "a@example.com", "n": 7});
    let enqueued = run(
        &dir.0,
        &[
            "enqueue",
            "--server",
            &server,
            "--queue",
            "emails",
            &payload.to_string(),
        ],
    )
    .await;
    assert!(enqueued.status.success(), "{}", stderr(&enqueued));
    let id: i64 = stdout(&enqueued).trim().parse().unwrap();
    assert!(id > 0);

    let shown = run(&dir.0, &["job", "--server", &server, &id.to_string()]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let job: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(job["id"], json!(id));
    assert_eq!(job["state"], json!("pending"));
    assert_eq!(job["payload"], payload);

    let mut from_stdin = baton(
        &dir.0,
        &[
            "enqueue",
            "--server",
            &server,
            "-q",
            "emails",
            "--priority",
            "-2",
            "-",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = from_stdin.stdin.take().unwrap();
    stdin.write_all(br#"{"from": "stdin"}"#).await.unwrap();
    drop(stdin);
    let piped = tokio::time::timeout(Duration::from_secs(60), from_stdin.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    let piped_id: i64 = stdout(&piped).trim().parse().unwrap();
    let shown = run(&dir.0, &["job", "--server", &server, &piped_id.to_string()]).await;
    let job: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(job["payload"], json!({"from": "stdin"}));
    assert_eq!(job["priority"], json!(-2));

    let counted = run(
        &dir.0,
        &["counts", "--server", &server, "--queue", "emails"],
    )
    .await;
    let counts: Value = serde_json::from_str(&stdout(&counted)).unwrap();
    assert_eq!(counts["pending"], json!(2));

    let unknown = run(&dir.0, &["job", "--server", &server, "999999"]).await;
    assert!(!unknown.status.success());
    assert_eq!(stderr(&unknown).trim(), "error: job 999999 not found");

    let stopped = terminate(child).await;
    let log = stderr(&stopped);
    assert!(
        stopped.status.success(),
        "serve exited with {}: {log}",
        stopped.status
    );
    assert!(
        log.contains(&format!("http://{listen}")) && log.contains("sqlite://baton.db"),
        "the start line names the address and the backend: {log}"
    );

    let unreachable = run(&dir.0, &["job", "--server", &server, "1"]).await;
    assert!(!unreachable.status.success());
    assert_eq!(
        stderr(&unreachable).trim(),
        format!("error: cannot reach baton at {server}: is `baton serve` running?")
    );
}

#[tokio::test]
async fn bad_input_on_the_command_line_fails_with_a_clear_message() {
    let dir = Scratch(temp_dir("cli-input"));
    let cases: [(&[&str], &str); 5] = [
        (
            &["enqueue", "-q", "emails", "{not json"],
            "payload is not valid json",
        ),
        (&["enqueue", "-q", "", "1"], "queue name is empty"),
        (&["job", "abc"], "job id \"abc\" is not a positive integer"),
        (&["job", "0"], "job id \"0\" is not a positive integer"),
        (
            &["enqueue", "-q", "q", "--delay", "soon", "1"],
            "is not a duration",
        ),
    ];
    for (args, expected) in cases {
        let output = run(&dir.0, args).await;
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn unsupported_backends_are_refused_by_name() {
    let dir = Scratch(temp_dir("cli-backend"));
    let output = run(&dir.0, &["serve", "--backend", "rediss://localhost:6379"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("TLS (rediss://) is not supported by this build"),
        "{}",
        stderr(&output)
    );
    let output = run(&dir.0, &["serve", "--backend", "etcd://h"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("expected one of memory://"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn every_command_has_help() {
    let dir = Scratch(temp_dir("cli-help"));
    for command in ["serve", "enqueue", "job", "cancel", "counts", "bench"] {
        let output = run(&dir.0, &[command, "--help"]).await;
        assert!(output.status.success(), "{command}");
        assert!(stdout(&output).contains("Usage: baton"), "{command}");
    }
}

#[tokio::test]
async fn jobs_enqueued_on_the_default_sqlite_backend_survive_a_server_restart() {
    let dir = Scratch(temp_dir("cli-restart"));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = format!("http://{listen}");
    let client = Client::new(&server).unwrap();

    let first = baton(&dir.0, &["serve", "--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_healthy(&client, Duration::from_secs(10)).await;
    let enqueued = run(
        &dir.0,
        &[
            "enqueue",
            "--server",
            &server,
            "-q",
            "durable",
            r#"{"keep": true}"#,
        ],
    )
    .await;
    assert!(enqueued.status.success(), "{}", stderr(&enqueued));
    let id = stdout(&enqueued).trim().to_owned();
    let stopped = terminate(first).await;
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert!(
        dir.0.join("baton.db").exists(),
        "the default backend is a sqlite file in the working directory"
    );

    let second = baton(&dir.0, &["serve", "--listen", &listen])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_healthy(&client, Duration::from_secs(10)).await;
    let shown = run(&dir.0, &["job", "--server", &server, &id]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let job: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(job["payload"], json!({"keep": true}));
    assert_eq!(job["state"], json!("pending"));
    let stopped = terminate(second).await;
    assert!(stopped.status.success(), "{}", stderr(&stopped));
}

#[tokio::test]
async fn config_show_prints_each_setting_with_its_source() {
    let dir = Scratch(temp_dir("config-show"));
    std::fs::write(dir.0.join("baton.toml"), "listen = \"127.0.0.1:7001\"\n").unwrap();
    let output = baton(
        &dir.0,
        &[
            "config",
            "show",
            "--output",
            "json",
            "--backend",
            "memory://",
        ],
    )
    .env("BATON_SERVER", "http://env:2")
    .output()
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let settings: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let source = |key: &str| {
        settings
            .iter()
            .find(|setting| setting["key"] == key)
            .map(|setting| setting["source"].clone())
    };
    assert_eq!(source("listen"), Some(json!("baton.toml")));
    assert_eq!(source("server"), Some(json!("environment (BATON_SERVER)")));
    assert_eq!(source("backend"), Some(json!("flag")));
    assert_eq!(source("table_prefix"), Some(json!("default")));

    let text = run(&dir.0, &["config", "show"]).await;
    assert!(text.status.success(), "{}", stderr(&text));
    let listen = stdout(&text)
        .lines()
        .find(|line| line.starts_with("listen = "))
        .map(str::to_owned);
    let listen = listen.unwrap_or_default();
    assert!(
        listen.starts_with("listen = \"127.0.0.1:7001\"") && listen.ends_with("  # baton.toml"),
        "{}",
        stdout(&text)
    );
}

#[tokio::test]
async fn client_commands_send_the_configured_api_token_and_fail_clearly_without_it() {
    let dir = Scratch(temp_dir("cli-token"));
    let stranger = Scratch(temp_dir("cli-token-stranger"));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    // One file for the server and the commands run beside it.
    std::fs::write(
        dir.0.join("baton.toml"),
        format!(
            "listen = \"{listen}\"\nserver = \"{server}\"\napi_token = \"cli-token-0123456789\"\n"
        ),
    )
    .unwrap();
    let child = baton(&dir.0, &["serve"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_healthy(&Client::new(&server).unwrap(), Duration::from_secs(10)).await;

    let enqueued = run(&dir.0, &["enqueue", "--queue", "guarded", "{}"]).await;
    assert!(enqueued.status.success(), "{}", stderr(&enqueued));
    let id = stdout(&enqueued).trim().to_owned();
    let shown = run(&dir.0, &["job", &id]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));

    // Without the configuration, the same calls are refused and say why.
    for args in [
        vec!["enqueue", "--server", &server, "--queue", "guarded", "{}"],
        vec!["job", "--server", &server, &id],
    ] {
        let refused = run(&stranger.0, &args).await;
        assert!(
            !refused.status.success(),
            "{args:?} succeeded without the token"
        );
        assert!(
            stderr(&refused).contains("api token"),
            "{}",
            stderr(&refused)
        );
    }
    let output = terminate(child).await;
    assert!(output.status.success(), "{}", stderr(&output));
}

#[tokio::test]
async fn serve_logs_one_json_object_per_line_when_configured() {
    let dir = Scratch(temp_dir("cli-json-log"));
    let listen = format!("127.0.0.1:{}", free_port());
    let child = baton(
        &dir.0,
        &["serve", "--backend", "memory://", "--listen", &listen],
    )
    .env("BATON_LOG_FORMAT", "json")
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until_healthy(
        &Client::new(&format!("http://{listen}")).unwrap(),
        Duration::from_secs(10),
    )
    .await;
    let output = terminate(child).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.iter().all(|line| line["level"].is_string()), "{log}");
    assert!(
        lines.iter().any(|line| line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("baton serving on"))),
        "{log}"
    );
}

#[tokio::test]
async fn enqueue_from_a_file_sends_every_line_or_none() {
    let dir = Scratch(temp_dir("cli-file"));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let child = baton(
        &dir.0,
        &["serve", "--backend", "memory://", "--listen", &listen],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let client = Client::new(&server).unwrap();
    wait_until_healthy(&client, Duration::from_secs(10)).await;

    // More lines than one request carries, and a blank one.
    let lines: Vec<String> = (0..2500).map(|n| json!({ "n": n }).to_string()).collect();
    let good = dir.0.join("jobs.jsonl");
    std::fs::write(&good, format!("{}\n\n", lines.join("\n"))).unwrap();
    let args = ["enqueue", "--server", &server, "--queue", "bulk", "--file"];
    let sent = run(&dir.0, &[&args[..], &["jobs.jsonl"]].concat()).await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(stdout(&sent).lines().count(), 2500);
    assert!(
        stderr(&sent).contains("enqueued 2500 jobs"),
        "{}",
        stderr(&sent)
    );
    assert_eq!(client.counts("bulk").await.unwrap().pending, 2500);

    std::fs::write(dir.0.join("bad.jsonl"), "{\"n\": 1}\n{not json\n").unwrap();
    let refused = run(&dir.0, &[&args[..], &["bad.jsonl"]].concat()).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("line 2 of bad.jsonl"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        client.counts("bulk").await.unwrap().pending,
        2500,
        "nothing more was sent"
    );

    let output = terminate(child).await;
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A request to the server with `token` as its bearer token, if any: the status and body.
async fn http(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (reqwest::StatusCode, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn serve_on_sqlite_with_a_token_is_driven_over_http_alone() {
    use reqwest::{Method, StatusCode};

    const TOKEN: &str = "e2e-token-0123456789";
    let dir = Scratch(temp_dir("cli-e2e"));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = format!("http://{listen}");
    let broker = format!("tcp://127.0.0.1:{}", free_port());
    std::fs::write(
        dir.0.join("baton.toml"),
        format!(
            "backend = \"sqlite://e2e.db\"\nlisten = \"{listen}\"\nserver = \"{server}\"\n\
             api_token = \"{TOKEN}\"\n[broker]\nenabled = true\nendpoint = \"{broker}\"\n"
        ),
    )
    .unwrap();
    let child = baton(&dir.0, &["serve"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_healthy(&Client::new(&server).unwrap(), Duration::from_secs(10)).await;
    let api = |path: &str| format!("{server}{path}");

    // Without the token: 401, and nothing happens.
    let job = json!({"queue": "e2e", "payload": {"report": 7}});
    let (status, _) = http(Method::POST, &api("/api/v1/jobs"), None, Some(job.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = http(Method::POST, &api("/api/v1/jobs"), Some(TOKEN), Some(job)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"].to_string();

    // `baton wait` follows the job through the broker until it ends.
    let waiting = tokio::spawn({
        let dir = dir.0.clone();
        let id = id.clone();
        async move { run(&dir, &["wait", &id, "--timeout", "30s"]).await }
    });
    // Whether the wait reaches the broker before or after the cancel, it ends with the job's
    // final state: the broker answers at once for a job that already ended.
    let cancel = api(&format!("/api/v1/jobs/{id}/cancel"));
    let (status, body) = http(Method::POST, &cancel, Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let waited = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("baton wait returns once the job ends")
        .unwrap();
    assert!(stderr(&waited).contains("canceled"), "{}", stderr(&waited));

    let pause = api("/api/v1/queues/e2e/pause");
    let (status, body) = http(Method::POST, &pause, Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = http(
        Method::GET,
        &api("/api/v1/queues/paused"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!(["e2e"])
    );

    let (status, metrics) = http(Method::GET, &api("/metrics"), Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"baton_jobs_enqueued_total{queue="e2e"} 1"#,
        r#"baton_jobs{queue="e2e",state="canceled"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let (status, document) =
        http(Method::GET, &api("/api/v1/openapi.json"), Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    let document: Value = serde_json::from_str(&document).unwrap();
    for path in ["/api/v1/jobs", "/api/v1/queues/{queue}/pause", "/metrics"] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
    let output = terminate(child).await;
    assert!(output.status.success(), "{}", stderr(&output));
}
