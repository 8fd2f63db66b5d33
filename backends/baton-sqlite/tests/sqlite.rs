//! What the conformance suite cannot see: several handles (as several processes) on one file,
//! hostile names, URL forms and opening errors.

use std::path::PathBuf;
use std::time::Duration;

use baton_core::{
    Acquire, Dispatch, Error, JobState, Lock, LockName, LockRequest, NewJob, Owner, Queue,
    QueueName,
};
use baton_sqlite::{SqliteBackend, SqliteConfig};
use baton_testkit::dropping::{ROUNDS, drop_lock_call};
use futures::StreamExt;

const WITHIN: Duration = Duration::from_secs(5);

/// A database file path of its own, in a directory removed when the guard drops.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let directory =
            std::env::temp_dir().join(format!("baton-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).expect("create the scratch directory");
        Self(directory)
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("baton.db").display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_share_jobs_locks_and_events() {
    let scratch = Scratch::new("shared");
    let (first, second) = tokio::join!(
        SqliteBackend::connect(SqliteConfig::new(scratch.url())),
        SqliteBackend::connect(SqliteConfig::new(scratch.url())),
    );
    let (first, second) = (first.unwrap(), second.unwrap());

    let queue = QueueName::new("shared").unwrap();
    let mut wakes = first.wakeups(std::slice::from_ref(&queue)).await.unwrap();
    let id = second
        .enqueue(&NewJob::new(queue.clone(), serde_json::json!({"n": 1})).unwrap())
        .await
        .unwrap();
    let woken = tokio::time::timeout(WITHIN, wakes.next()).await;
    assert_eq!(woken.expect("woken across handles"), Some(queue.clone()));
    assert_eq!(
        first.get(id).await.unwrap().unwrap().state,
        JobState::Pending
    );

    let events = first.subscribe(id).await.unwrap();
    let owner = Owner::new("worker").unwrap();
    let reserved = second
        .reserve(
            std::slice::from_ref(&queue),
            &owner,
            Duration::from_secs(30),
            1,
        )
        .await
        .unwrap();
    assert_eq!(reserved.len(), 1);
    second
        .complete(&reserved[0].lease, serde_json::json!("done"))
        .await
        .unwrap();
    let states: Vec<JobState> = tokio::time::timeout(WITHIN, events.map(|e| e.state).collect())
        .await
        .expect("events delivered across handles");
    assert_eq!(states, [JobState::Running, JobState::Succeeded]);

    let name = LockName::new("shared-lock").unwrap();
    let request = |who: &str| {
        LockRequest::new(
            [name.clone()],
            Owner::new(who).unwrap(),
            Duration::from_secs(30),
        )
        .unwrap()
    };
    let held = first
        .acquire(&request("a"))
        .await
        .unwrap()
        .granted()
        .unwrap();
    assert!(matches!(
        second.acquire(&request("b")).await.unwrap(),
        Acquire::Busy(_)
    ));
    let waiting = {
        let second = second.clone();
        let request = request("b").with_wait(WITHIN);
        tokio::spawn(async move { second.acquire(&request).await })
    };
    first.release_lock(&held).await.unwrap();
    let taken = waiting
        .await
        .unwrap()
        .unwrap()
        .granted()
        .expect("granted after release");
    assert!(taken.lease.token() > held.lease.token());
}

#[tokio::test]
async fn an_in_memory_database_works_on_one_connection() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let backend = SqliteBackend::connect(SqliteConfig::new(url))
            .await
            .unwrap();
        let queue = QueueName::new("q").unwrap();
        let id = backend
            .enqueue(&NewJob::new(queue.clone(), serde_json::json!(1)).unwrap())
            .await
            .unwrap();
        assert_eq!(backend.last(&queue).await.unwrap().unwrap().id, id);
    }
}

#[tokio::test]
async fn a_relative_sqlite_url_opens_a_file() {
    let scratch = Scratch::new("relative");
    let path = scratch.0.join("plain.db");
    let backend = SqliteBackend::connect(SqliteConfig::new(format!("sqlite:{}", path.display())))
        .await
        .unwrap();
    let queue = QueueName::new("q").unwrap();
    backend
        .enqueue(&NewJob::new(queue, serde_json::json!(1)).unwrap())
        .await
        .unwrap();
    assert!(path.exists());
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error_naming_the_path() {
    let path = std::env::temp_dir().join("baton-no-such-directory/sub/baton.db");
    let error = SqliteBackend::connect(SqliteConfig::new(format!("sqlite://{}", path.display())))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn a_url_of_another_database_is_refused() {
    let error = SqliteBackend::connect(SqliteConfig::new("postgres://localhost/baton"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_opening_a_new_file_at_once_all_migrate_it() {
    let scratch = Scratch::new("migrate");
    let connects = (0..6).map(|_| SqliteBackend::connect(SqliteConfig::new(scratch.url())));
    let backends = futures::future::join_all(connects).await;
    let queue = QueueName::new("q").unwrap();
    for backend in backends {
        let backend = backend.expect("every handle connects and migrates");
        backend
            .enqueue(&NewJob::new(queue.clone(), serde_json::json!(1)).unwrap())
            .await
            .unwrap();
    }
    let again = SqliteBackend::connect(SqliteConfig::new(scratch.url()))
        .await
        .unwrap();
    assert_eq!(again.counts(&queue).await.unwrap().pending, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_flight_loses_no_connection_and_leaves_no_transaction_open() {
    let scratch = Scratch::new("dropped");
    // Few connections, so that the calls after a drop reuse the connection it left behind.
    let mut config = SqliteConfig::new(scratch.url());
    config.max_connections = 2;
    let backend = SqliteBackend::connect(config).await.expect("open");
    let observer = SqliteBackend::connect(SqliteConfig::new(scratch.url()))
        .await
        .expect("open again");
    let queue = QueueName::new("after-drops").expect("a name");
    let mut dropped = 0;
    for round in 0..ROUNDS {
        if drop_lock_call(&backend, round).await {
            dropped += 1;
        }
        let job = NewJob::new(queue.clone(), serde_json::json!(round)).expect("a job");
        let id = tokio::time::timeout(WITHIN, backend.enqueue(&job))
            .await
            .expect("an enqueue after a dropped call finishes")
            .expect("enqueue");
        assert!(
            observer.get(id).await.expect("get").is_some(),
            "job {id}, enqueued after round {round}, is not visible to another handle"
        );
    }
    assert!(dropped > 0, "no call was dropped mid-flight");
}
