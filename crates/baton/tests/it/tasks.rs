//! `baton lock run` and `baton task run` as real processes on a SQLite file: concurrent
//! critical sections never interleave, busy locks end with the documented exit status and name
//! their holder, a command whose lease is lost is stopped, and tasks are listed and killed.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use baton_core::{Lock, LockLease};
use baton_sql::TablePrefix;
use baton_sqlite::{SqliteBackend, SqliteConfig};
use tokio::process::Command;

use crate::support::temp_dir;

const BATON: &str = env!("CARGO_BIN_EXE_baton");
const WAIT: Duration = Duration::from_secs(30);

fn baton(db: &Path) -> Command {
    let mut command = Command::new(BATON);
    command
        .env("BATON_BACKEND", format!("sqlite://{}", db.display()))
        .env_remove("BATON_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(command: &mut Command) -> Output {
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("baton did not finish in time")
        .unwrap()
}

/// Waits until `path` holds `needle`.
async fn file_holds(path: &Path, needle: &str) {
    tokio::time::timeout(WAIT, async {
        while !std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never held {needle:?}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_from_concurrent_processes_serialises_a_critical_section() {
    let dir = temp_dir("lock-run");
    let db = dir.join("baton.db");
    let file = dir.join("section");
    // Each writer appends a block of lines with pauses between them; without the lock, the
    // blocks of concurrent writers interleave.
    let section = format!(
        "echo \"begin $W $BATON_FENCING_TOKEN\" >> '{f}'; for i in 1 2 3 4 5; do \
         echo \"$W $i\" >> '{f}'; sleep 0.02; done; echo \"end $W\" >> '{f}'",
        f = file.display()
    );
    let writers: Vec<_> = (0..4)
        .map(|w| {
            baton(&db)
                .args(["lock", "run", "--lock", "app:1", "--reason"])
                .arg(format!("writer {w}"))
                .args(["--", "sh", "-c", &section])
                .env("W", w.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for writer in writers {
        let output = tokio::time::timeout(WAIT, writer.wait_with_output())
            .await
            .expect("a writer did not finish in time")
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4 * 7, "{text}");
    let mut tokens = Vec::new();
    for block in lines.chunks(7) {
        let begin: Vec<&str> = block[0].split_whitespace().collect();
        assert_eq!(begin[0], "begin", "{text}");
        let writer = begin[1];
        tokens.push(begin[2].parse::<u64>().unwrap());
        for (i, line) in block[1..6].iter().enumerate() {
            assert_eq!(*line, format!("{writer} {}", i + 1), "interleaved:\n{text}");
        }
        assert_eq!(block[6], format!("end {writer}"), "interleaved:\n{text}");
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must grow: {tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_exits_with_the_command_status_or_75_naming_the_holder() {
    let dir = temp_dir("lock-busy");
    let db = dir.join("baton.db");
    let started = dir.join("started");
    let gate = dir.join("gate");
    let holder = baton(&db)
        .args([
            "lock",
            "run",
            "--lock",
            "app:42",
            "--lock",
            "tasktype:backup",
        ])
        .args(["--reason", "backup of app 42", "--", "sh", "-c"])
        .arg(format!(
            "touch '{}'; while [ ! -f '{}' ]; do sleep 0.02; done; exit 7",
            started.display(),
            gate.display()
        ))
        .spawn()
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let busy = finish(baton(&db).args([
        "lock", "run", "--lock", "app:42", "--wait", "0", "--", "true",
    ]))
    .await;
    assert_eq!(busy.status.code(), Some(75), "{busy:?}");
    let said = String::from_utf8_lossy(&busy.stderr);
    assert!(
        said.contains("waiting for backup of app 42 to finish"),
        "{said}"
    );

    let list = finish(baton(&db).args(["lock", "list"])).await;
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("app:42") && table.contains("backup of app 42"),
        "{table}"
    );

    std::fs::write(&gate, "").unwrap();
    let output = tokio::time::timeout(WAIT, holder.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    let after = finish(baton(&db).args([
        "lock", "run", "--lock", "app:42", "--wait", "0", "--", "true",
    ]))
    .await;
    assert!(after.status.success(), "the lock was not freed: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_run_stops_the_command_when_its_lease_is_lost() {
    let dir = temp_dir("lock-lost");
    let db = dir.join("baton.db");
    let started = dir.join("started");
    let holder = baton(&db)
        .args([
            "lock", "run", "--lock", "update", "--ttl", "2s", "--grace", "200ms",
        ])
        .args(["--", "sh", "-c"])
        .arg(format!("touch '{}'; sleep 600", started.display()))
        .spawn()
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // Depose the holder behind its back: free its lock as if it had expired.
    let mut config = SqliteConfig::new(format!("sqlite://{}", db.display()));
    config.prefix = TablePrefix::new("baton_").unwrap();
    let backend = SqliteBackend::connect(config).await.unwrap();
    let held = backend.holders().await.unwrap();
    let update = held.iter().find(|h| h.name.as_str() == "update").unwrap();
    backend
        .release_lock(&LockLease {
            names: vec![update.name.clone()],
            lease: update.lease.clone(),
            reason: update.reason.clone(),
        })
        .await
        .unwrap();
    let output = tokio::time::timeout(WAIT, holder.wait_with_output())
        .await
        .expect("the command was not stopped")
        .unwrap();
    assert_eq!(output.status.code(), Some(76), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("stopping the command"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_run_records_waits_names_its_holder_and_is_killed_through_the_cli() {
    let dir = temp_dir("task-run");
    let db = dir.join("baton.db");
    let tasks = dir.join("tasks");
    let tasks_arg = tasks.display().to_string();
    let holder = baton(&db)
        .args([
            "task",
            "run",
            "--dir",
            &tasks_arg,
            "--lock",
            "app:9",
            "--reason",
            "backup of app 9",
        ])
        .args(["--", "sh", "-c"])
        // The update step: a lock taken for part of the task's life, from inside it.
        .arg(
            "\"$LOCK_TOOL\" lock run --lock update --reason 'update step' -- \
             sh -c 'echo update step with token $BATON_FENCING_TOKEN'; echo working; sleep 600",
        )
        .env("LOCK_TOOL", BATON)
        .spawn()
        .unwrap();
    let holder_id = holder.id().unwrap();
    let record = tasks.join(format!("{holder_id}.json"));
    file_holds(&record, "\"running\"").await;
    let log = tasks.join(format!("{holder_id}.log"));
    file_holds(&log, "working").await;
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("update step with token 1"), "{written}");

    let waiter = baton(&db)
        .args([
            "task", "run", "--dir", &tasks_arg, "--lock", "app:9", "--", "true",
        ])
        .spawn()
        .unwrap();
    let waiter_record = tasks.join(format!("{}.json", waiter.id().unwrap()));
    file_holds(
        &waiter_record,
        &format!("waiting for task {holder_id} (backup of app 9) to finish"),
    )
    .await;

    let impatient = finish(baton(&db).args([
        "task", "run", "--dir", &tasks_arg, "--lock", "app:9", "--wait", "0", "--", "true",
    ]))
    .await;
    assert_eq!(impatient.status.code(), Some(75), "{impatient:?}");

    let list = finish(baton(&db).args(["task", "list", "--dir", &tasks_arg])).await;
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("running") && table.contains("waiting"),
        "{table}"
    );
    let logs =
        finish(baton(&db).args(["task", "logs", "--dir", &tasks_arg, &holder_id.to_string()]))
            .await;
    assert!(String::from_utf8_lossy(&logs.stdout).contains("working"));

    let killed =
        finish(baton(&db).args(["task", "kill", "--dir", &tasks_arg, &holder_id.to_string()]))
            .await;
    assert!(killed.status.success(), "{killed:?}");
    let output = tokio::time::timeout(WAIT, holder.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(143), "{output:?}");
    let output = tokio::time::timeout(WAIT, waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "the waiter did not run: {output:?}"
    );
    let shown =
        finish(baton(&db).args(["task", "show", "--dir", &tasks_arg, &holder_id.to_string()]))
            .await;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "killed");
}
