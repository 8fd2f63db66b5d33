//! `--output json|table` on the read commands of the real `baton` binary, against a server
//! running in this process. Standard output is a pipe here, as it is for a script.

use std::process::Output;

use baton::wire::EnqueueRequest;
use serde_json::{Value, json};

use crate::cli::{Scratch, run as baton};
use crate::support::{TestServer, temp_dir};

/// Its standard output, once it succeeded.
fn printed(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The words of the line of `text` whose first word is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

/// A server holding two jobs on queue `emails`; their ids, oldest first.
async fn server_with_two_jobs() -> (TestServer, [String; 2]) {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let request = EnqueueRequest::new("emails", json!({ "n": n }));
        ids.push(server.client.enqueue(&request).await.unwrap().to_string());
    }
    let ids = [ids[0].clone(), ids[1].clone()];
    (server, ids)
}

#[tokio::test]
async fn output_table_prints_a_header_row_and_each_jobs_id_and_state_in_columns() {
    let dir = Scratch(temp_dir("output-table"));
    let (server, [first, second]) = server_with_two_jobs().await;
    let url = server.url.as_str();

    let jobs = printed(&baton(&dir.0, &["jobs", "--server", url, "--output", "table"]).await);
    let lines: Vec<&str> = jobs.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "QUEUE", "STATE", "ATTEMPTS", "CREATED", "RUN_AT"],
        "{jobs}"
    );
    assert_eq!(
        row(&jobs, &second)[..3],
        [second.as_str(), "emails", "pending"]
    );
    assert_eq!(
        row(&jobs, &first)[..3],
        [first.as_str(), "emails", "pending"]
    );
    let state_column = lines[0].find("STATE").unwrap();
    assert!(
        lines[1..3]
            .iter()
            .all(|line| line.find("pending") == Some(state_column)),
        "the states line up under STATE:\n{jobs}"
    );

    let job = printed(
        &baton(
            &dir.0,
            &["job", "--server", url, "--output", "table", &first],
        )
        .await,
    );
    assert_eq!(row(&job, "FIELD"), ["FIELD", "VALUE"], "{job}");
    assert_eq!(row(&job, "id"), ["id", first.as_str()]);
    assert_eq!(row(&job, "queue"), ["queue", "emails"]);
    assert_eq!(row(&job, "state"), ["state", "pending"]);
    assert!(job.contains("no attempt yet"), "{job}");

    let counts = printed(
        &baton(
            &dir.0,
            &[
                "counts", "--server", url, "-q", "emails", "--output", "table",
            ],
        )
        .await,
    );
    assert_eq!(row(&counts, "STATE"), ["STATE", "COUNT"], "{counts}");
    assert_eq!(row(&counts, "pending"), ["pending", "2"]);
    assert_eq!(row(&counts, "succeeded"), ["succeeded", "0"]);
    server.shutdown().await;
}

#[tokio::test]
async fn output_json_is_the_json_printed_by_default_off_a_terminal() {
    let dir = Scratch(temp_dir("output-json"));
    let (server, [first, _]) = server_with_two_jobs().await;
    let url = server.url.as_str();
    let reads: [&[&str]; 3] = [
        &["jobs", "--server", url],
        &["job", "--server", url, &first],
        &["counts", "--server", url, "--queue", "emails"],
    ];
    for read in reads {
        let default = printed(&baton(&dir.0, read).await);
        let chosen = printed(&baton(&dir.0, &[read, &["--output", "json"]].concat()).await);
        assert_eq!(chosen, default, "{read:?}");
        let parsed: Value = serde_json::from_str(&chosen).unwrap();
        assert!(parsed.is_object(), "{read:?}: {chosen}");
    }
    let counts: Value = serde_json::from_str(&printed(
        &baton(
            &dir.0,
            &[
                "counts", "--server", url, "-q", "emails", "--output", "json",
            ],
        )
        .await,
    ))
    .unwrap();
    assert_eq!(counts["pending"], json!(2));
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_output_format_is_a_usage_error_naming_the_accepted_ones() {
    let dir = Scratch(temp_dir("output-usage"));
    let commands: [&[&str]; 5] = [
        &["jobs"],
        &["job", "1"],
        &["counts", "--queue", "emails"],
        &["config", "show"],
        &["master", "status"],
    ];
    for command in commands {
        let output = baton(&dir.0, &[command, &["--output", "yaml"]].concat()).await;
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {said}");
        assert!(
            said.contains("'yaml'") && said.contains("json") && said.contains("table"),
            "{command:?}: {said}"
        );
        assert!(output.stdout.is_empty(), "{command:?}");
    }
}

#[tokio::test]
async fn listings_that_printed_tables_keep_them_by_default_and_print_json_when_asked() {
    let dir = Scratch(temp_dir("output-listings"));
    let backend = ["--backend", "memory://"];

    let table = printed(&baton(&dir.0, &[&["lock", "list"], &backend[..]].concat()).await);
    assert_eq!(table, "no lock is held\n");
    let json = printed(
        &baton(
            &dir.0,
            &[&["lock", "list", "--output", "json"], &backend[..]].concat(),
        )
        .await,
    );
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!([]));
    let flag = printed(
        &baton(
            &dir.0,
            &[&["lock", "list", "--json"], &backend[..]].concat(),
        )
        .await,
    );
    assert_eq!(flag, json, "--json is --output json");

    let masters = printed(
        &baton(
            &dir.0,
            &[&["master", "status", "--output", "json"], &backend[..]].concat(),
        )
        .await,
    );
    assert_eq!(serde_json::from_str::<Value>(&masters).unwrap(), json!([]));

    let tasks = ["task", "list", "--dir", "no-tasks-here"];
    assert_eq!(printed(&baton(&dir.0, &tasks).await), "no task\n");
    let json = printed(&baton(&dir.0, &[&tasks[..], &["--output", "json"]].concat()).await);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!([]));

    let settings = ["config", "show", "--backend", "memory://"];
    let text = printed(&baton(&dir.0, &settings).await);
    assert!(
        text.lines()
            .any(|line| line.starts_with("backend = \"memory://\"")),
        "{text}"
    );
    let named = printed(&baton(&dir.0, &[&settings[..], &["--output", "text"]].concat()).await);
    assert_eq!(named, text, "text is still accepted for table");
}
