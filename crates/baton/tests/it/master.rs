//! Masters through the binary: the `/api/mastercontrols` routes and their API token, and
//! `baton master run|disable|enable|status` as real processes on a SQLite file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::api::auth::Access;
use baton::config::ApiToken;
use baton::master::ControlEntry;
use baton_core::Owner;
use baton_master::{
    MasterExecutor, MasterName, MasterOptions, MasterSettings, MasterState, job_fn,
};
use baton_memory::MemoryBackend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::support::temp_dir;

const BATON: &str = env!("CARGO_BIN_EXE_baton");
const TOKEN: &str = "test-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

async fn server(backend: &MemoryBackend, token: Option<&str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Reads open, so that listing masters needs no token here.
    let access = Access::new(token.map(|token| ApiToken(token.to_owned())), true);
    tokio::spawn(baton::serve::serve_with_access(
        listener,
        Arc::new(backend.clone()),
        Duration::from_secs(3600),
        access,
        std::future::pending(),
    ));
    url
}

async fn post(url: &str, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn list(url: &str) -> Vec<ControlEntry> {
    reqwest::get(format!("{url}/api/mastercontrols"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn mastercontrols_refuse_changes_without_the_right_api_token() {
    let backend = MemoryBackend::new();
    let url = server(&backend, Some(TOKEN)).await;
    let body = json!({"lockName": "JOB-SCHEDULER", "reason": "testing"});
    let (status, error) = post(&url, "/api/mastercontrols/disable", None, body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert_eq!(error["kind"], "unauthorized");
    let (status, _) = post(
        &url,
        "/api/mastercontrols/disable",
        Some("wrong-token-0123456789"),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(
        &url,
        "/api/mastercontrols/enable",
        None,
        json!({"lockName": "JOB-SCHEDULER"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(list(&url).await.is_empty(), "nothing was disabled");

    // A server with no token configured refuses every change.
    let open = server(&backend, None).await;
    let (status, error) = post(&open, "/api/mastercontrols/disable", Some(TOKEN), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(error["error"].as_str().unwrap().contains("api_token"));
}

#[tokio::test]
async fn mastercontrols_disable_stop_list_and_enable_a_running_master() {
    let backend = MemoryBackend::new();
    let url = server(&backend, Some(TOKEN)).await;
    let settings = MasterSettings {
        init_delay: Duration::ZERO,
        heartbeat_interval: Duration::from_millis(200),
        lease: Some(Duration::from_secs(2)),
        ..MasterSettings::default()
    };
    let (stops, mut stopped) = tokio::sync::mpsc::unbounded_channel();
    let job = job_fn(
        |_leadership| async {},
        move |token, cause| {
            let stops = stops.clone();
            async move {
                let _ = stops.send((token, cause));
            }
        },
    );
    let options = MasterOptions::new(MasterName::new("JOB-SCHEDULER").unwrap())
        .with_settings(settings)
        .with_owner(Owner::new("instance-a").unwrap());
    let executor = MasterExecutor::start(Arc::new(backend.clone()), options, job).unwrap();
    let mut state = executor.watch_state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, MasterState::Leading { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let leading = list(&url).await;
    assert_eq!(leading.len(), 1);
    assert_eq!(leading[0].lock_name, "JOB-SCHEDULER");
    assert_eq!(leading[0].holder.as_deref(), Some("instance-a"));
    assert!(leading[0].since.is_some() && leading[0].token.is_some());
    assert!(!leading[0].disabled);

    let (status, entry) = post(
        &url,
        "/api/mastercontrols/disable",
        Some(TOKEN),
        json!({"lockName": "JOB-SCHEDULER", "reason": "testing"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["disabled"], true);
    assert_eq!(entry["disabledReason"], "testing");
    let (token, cause) = tokio::time::timeout(WAIT, stopped.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(token.get()), leading[0].token);
    assert_eq!(cause.kind(), "disabled");
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, MasterState::Disabled { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let disabled = list(&url).await;
    assert!(disabled[0].disabled);
    assert_eq!(disabled[0].disabled_reason.as_deref(), Some("testing"));
    assert_eq!(disabled[0].disabled_by.as_deref(), Some("api"));

    let (status, entry) = post(
        &url,
        "/api/mastercontrols/enable",
        Some(TOKEN),
        json!({"lockName": "JOB-SCHEDULER"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["disabled"], false);
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, MasterState::Leading { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    executor.shutdown().await;

    let (status, error) = post(
        &url,
        "/api/mastercontrols/disable",
        Some(TOKEN),
        json!({"lockName": " bad"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}

// ---------------------------------------------------------------------------------------------
// `baton master …` as processes.

/// `baton master run` of a shell script that appends `token parent-pid` to `runs` when it
/// starts and `term` when it gets SIGTERM.
fn master_run(dir: &Path) -> Child {
    let script = format!(
        "echo \"$BATON_FENCING_TOKEN $PPID\" >> {runs}; \
         trap 'echo \"$BATON_FENCING_TOKEN\" >> {term}; exit 0' TERM; \
         while :; do sleep 0.05; done",
        runs = dir.join("runs").display(),
        term = dir.join("term").display(),
    );
    Command::new(BATON)
        .args([
            "master",
            "run",
            "--name",
            "nightly",
            "--init-delay",
            "0s",
            "--lease",
            "2s",
        ])
        .args([
            "--heartbeat-interval",
            "400ms",
            "--grace",
            "5s",
            "--backend",
        ])
        .arg(backend_url(dir))
        .args(["--", "sh", "-c", &script])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A group of its own, so that the instance and its command die together.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// SIGKILLs `instance` and the command it runs, as a crash of its machine would.
fn crash(instance: &Child) {
    if let Some(pid) = instance.id() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
}

fn backend_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("baton.db").display())
}

async fn master_cli(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(BATON)
        .arg("master")
        .args(args)
        .arg("--backend")
        .arg(backend_url(dir))
        .env_clear()
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "baton master {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The lines of `file` once it has at least `count`, looking every 20 ms for up to `within`.
async fn lines_of(file: &PathBuf, count: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let lines: Vec<String> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {count}, after {within:?}",
            file.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_of(line: &str) -> (u64, u32) {
    let mut words = line.split_whitespace();
    let token = words.next().unwrap().parse().unwrap();
    let parent = words.next().unwrap().parse().unwrap();
    (token, parent)
}

fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_run_runs_the_command_on_one_instance_and_elsewhere_when_that_one_is_killed() {
    let dir = temp_dir("master-run-failover");
    let mut instances = vec![master_run(&dir), master_run(&dir), master_run(&dir)];
    let runs = dir.join("runs");
    let first = lines_of(&runs, 1, WAIT).await;
    let (first_token, leader) = run_of(&first[0]);
    let leader_index = instances
        .iter()
        .position(|child| child.id() == Some(leader))
        .unwrap();

    // SIGKILL the leading instance with its command.
    crash(&instances[leader_index]);
    let killed_at = Instant::now();
    let second = lines_of(&runs, 2, WAIT).await;
    let failover = killed_at.elapsed();
    let (second_token, second_leader) = run_of(&second[1]);
    assert_ne!(second_leader, leader);
    assert!(second_token > first_token);
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?} with a 2 s lease"
    );
    assert_eq!(
        lines_of(&runs, 2, WAIT).await.len(),
        2,
        "exactly one instance runs the command"
    );

    // SIGTERM to the leading instance: its command gets SIGTERM, it exits cleanly, and the
    // last instance takes over at once.
    let second_index = instances
        .iter()
        .position(|child| child.id() == Some(second_leader))
        .unwrap();
    kill(second_leader, "TERM");
    let terms = lines_of(&dir.join("term"), 1, WAIT).await;
    assert_eq!(terms[0], second_token.to_string());
    let status = tokio::time::timeout(WAIT, instances[second_index].wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let third = lines_of(&runs, 3, WAIT).await;
    assert!(run_of(&third[2]).0 > second_token);
    for instance in &instances {
        crash(instance);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_disable_stops_the_command_with_sigterm_until_master_enable() {
    let dir = temp_dir("master-run-disable");
    let mut instance = master_run(&dir);
    let runs = dir.join("runs");
    let (token, _) = run_of(&lines_of(&runs, 1, WAIT).await[0]);

    let said = master_cli(
        &dir,
        &[
            "disable",
            "--name",
            "nightly",
            "--reason",
            "maintenance window",
        ],
    )
    .await;
    assert!(said.contains("disabled"), "{said}");
    let terms = lines_of(&dir.join("term"), 1, WAIT).await;
    assert_eq!(terms[0], token.to_string());
    let status = master_cli(&dir, &["status", "--json"]).await;
    let entries: Vec<ControlEntry> = serde_json::from_str(&status).unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].disabled);
    assert_eq!(
        entries[0].disabled_reason.as_deref(),
        Some("maintenance window")
    );
    let table = master_cli(&dir, &["status"]).await;
    assert!(
        table.contains("nightly") && table.contains("maintenance window"),
        "{table}"
    );
    assert!(
        instance.try_wait().unwrap().is_none(),
        "a disabled instance keeps waiting"
    );

    let said = master_cli(&dir, &["enable", "--name", "nightly"]).await;
    assert!(said.contains("enabled"), "{said}");
    let again = lines_of(&runs, 2, WAIT).await;
    assert!(run_of(&again[1]).0 > token);
    crash(&instance);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The `[master]` settings and the API token in the binary's configuration.

#[test]
#[allow(clippy::result_large_err)]
fn master_settings_come_from_the_file_then_the_environment_under_either_name() {
    use baton::config::{self, ConfigOverrides};
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "baton.toml",
            "api_token = \"from-the-file-0123456789\"\n\
             [master]\n\
             initDelay = 5000\n\
             heartbeat_interval = \"2s\"\n\
             checkMasterInterval = 20000\n",
        )?;
        let file = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(file.master.init_delay, Duration::from_secs(5));
        assert_eq!(file.master.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(file.master.check_master_interval, Duration::from_secs(20));
        assert_eq!(
            file.api_token,
            Some(ApiToken("from-the-file-0123456789".into()))
        );
        assert!(
            !format!("{file:?}").contains("from-the-file"),
            "the token stays out of logs"
        );

        jail.set_env("INIT_DELAY", "0");
        jail.set_env("BATON_MASTER_HEARTBEAT_INTERVAL", "500");
        jail.set_env("BATON_MASTER_LEASE", "2s");
        jail.set_env("BATON_API_TOKEN", "from-the-environment-0123");
        let env = config::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(env.master.init_delay, Duration::ZERO);
        assert_eq!(env.master.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(env.master.lease, Some(Duration::from_secs(2)));
        assert_eq!(env.master.check_master_interval, Duration::from_secs(20));
        assert_eq!(
            env.api_token,
            Some(ApiToken("from-the-environment-0123".into()))
        );

        jail.set_env("BATON_MASTER_HEARTBEAT_INTERVAL", "3s");
        let error = format!(
            "{:#}",
            config::load(None, &ConfigOverrides::default()).unwrap_err()
        );
        assert!(
            error.contains("heartbeatInterval") && error.contains("lease"),
            "{error}"
        );
        jail.set_env("BATON_MASTER_HEARTBEAT_INTERVAL", "500");
        jail.set_env("BATON_API_TOKEN", "short");
        let error = format!(
            "{:#}",
            config::load(None, &ConfigOverrides::default()).unwrap_err()
        );
        assert!(error.contains("api_token"), "{error}");
        Ok(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_master_failover_prints_one_figure_per_mode_with_a_time_per_round() {
    let dir = temp_dir("bench-master-failover");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(BATON)
            .args([
                "bench",
                "--master-failover",
                "tight",
                "--master-rounds",
                "2",
            ])
            .arg("--backend")
            .arg(backend_url(&dir))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&dir)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let figure = &lines[0];
    assert_eq!(figure["bench"], "master_failover");
    assert_eq!(figure["mode"], "tight");
    assert_eq!(figure["lease_ms"], 2000);
    assert_eq!(figure["failover_ms"].as_array().unwrap().len(), 2);
    assert!(figure["max_ms"].as_u64().unwrap() >= figure["p50_ms"].as_u64().unwrap());
    assert!(figure["clean_handover_ms"].is_u64());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn v1_master_routes_disable_list_and_enable_by_name_under_the_token() {
    let backend = MemoryBackend::new();
    let url = server(&backend, Some(TOKEN)).await;
    let disable = "/api/v1/masters/JOB-SCHEDULER/disable";
    let (status, _) = post(&url, disable, None, json!({"reason": "maintenance"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, entry) = post(&url, disable, Some(TOKEN), json!({"reason": "maintenance"})).await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["disabled"], true);
    assert_eq!(entry["disabledReason"], "maintenance");

    let listed: Vec<ControlEntry> = reqwest::get(format!("{url}/api/v1/masters"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].lock_name, "JOB-SCHEDULER");
    assert!(listed[0].disabled);
    // The alias lists the same.
    assert_eq!(list(&url).await, listed);

    let enable = "/api/v1/masters/JOB-SCHEDULER/enable";
    let (status, entry) = post(&url, enable, Some(TOKEN), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["disabled"], false);
    let (status, _) = post(
        &url,
        "/api/v1/masters/bad%01name/enable",
        Some(TOKEN),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // With no token configured, the v1 routes refuse changes as the aliases do.
    let open = server(&backend, None).await;
    let (status, _) = post(&open, disable, Some(TOKEN), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
