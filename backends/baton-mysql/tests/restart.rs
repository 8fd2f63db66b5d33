//! Restarting MariaDB in the middle of a run loses no job: workers see typed `Backend` errors
//! during the outage, carry on, and every job ends succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::{Dispatch, Error, NewJob, Owner, Queue, QueueName};
use baton_mysql::{MysqlBackend, MysqlConfig};
use baton_sql::TablePrefix;
use futures::StreamExt;
use tokio::sync::watch;

const JOBS: u64 = 2_000;
const WORKERS: usize = 4;

fn url() -> String {
    std::env::var("BATON_TEST_MYSQL_URL").expect(
        "BATON_TEST_MYSQL_URL is not set: run the tests through scripts/test, which starts the servers",
    )
}

/// How a worker takes an error: a backend error is expected during the outage, anything but a
/// lost lease (a completion that came too late) is a bug.
fn expect_backend(error: &Error, errors: &AtomicU64) {
    match error {
        Error::Backend { .. } => {
            errors.fetch_add(1, Ordering::SeqCst);
        }
        Error::LeaseLost { .. } => {}
        other => panic!("unexpected error during the restart: {other}"),
    }
}

async fn work(
    backend: MysqlBackend,
    queue: QueueName,
    index: usize,
    done: Arc<watch::Sender<u64>>,
    errors: Arc<AtomicU64>,
) {
    let owner = Owner::new(format!("restart-worker-{index}")).expect("a valid owner");
    let queues = [queue.clone()];
    loop {
        let wakes = backend.wakeups(&queues).await;
        let reserved = match backend
            .reserve(&queues, &owner, Duration::from_secs(2), 20)
            .await
        {
            Ok(reserved) => reserved,
            Err(error) => {
                expect_backend(&error, &errors);
                // Back off while the server is away.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if reserved.is_empty() {
            match backend.counts(&queue).await {
                Ok(counts) if counts.succeeded == JOBS => return,
                Ok(_) => {}
                Err(error) => expect_backend(&error, &errors),
            }
            if let Err(error) = backend.requeue_expired().await {
                expect_backend(&error, &errors);
            }
            if let Ok(mut wakes) = wakes {
                let _ = tokio::time::timeout(Duration::from_millis(250), wakes.next()).await;
            }
            continue;
        }
        for job in reserved {
            match backend
                .complete(&job.lease, serde_json::json!("done"))
                .await
            {
                Ok(_) => done.send_modify(|done| *done += 1),
                Err(error) => expect_backend(&error, &errors),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_restart_under_load_loses_no_job() {
    let mut config = MysqlConfig::new(url());
    config.prefix = TablePrefix::new(format!("tmy{}_restart_", std::process::id())).unwrap();
    config.acquire_timeout = Duration::from_secs(2);
    let backend = MysqlBackend::connect(config)
        .await
        .expect("connect to mysql");
    let queue = QueueName::new("restart").unwrap();
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|n| NewJob::new(queue.clone(), serde_json::json!({ "n": n })).unwrap())
        .collect();
    let ids = backend.enqueue_batch(&jobs).await.expect("enqueue");
    assert_eq!(ids.len() as u64, JOBS);

    let done = Arc::new(watch::Sender::new(0_u64));
    let mut progress = done.subscribe();
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|index| {
            tokio::spawn(work(
                backend.clone(),
                queue.clone(),
                index,
                done.clone(),
                errors.clone(),
            ))
        })
        .collect();

    // Restart once a part of the jobs is done, while the workers are busy.
    tokio::time::timeout(
        Duration::from_secs(60),
        progress.wait_for(|done| *done >= JOBS / 5),
    )
    .await
    .expect("workers made progress before the restart")
    .expect("the progress channel is open");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .args(["restart", "mysql"])
            .status()
    })
    .await
    .expect("restart task")
    .expect("run scripts/services");
    assert!(status.success(), "scripts/services restart mysql failed");

    for worker in workers {
        tokio::time::timeout(Duration::from_secs(120), worker)
            .await
            .expect("every job reached a terminal state in time")
            .expect("no worker panicked");
    }
    let counts = backend
        .counts(&queue)
        .await
        .expect("counts after the restart");
    assert_eq!(counts.total(), JOBS, "{counts:?}");
    assert_eq!(counts.succeeded, JOBS, "{counts:?}");
    for id in ids {
        let job = backend
            .get(id)
            .await
            .unwrap()
            .expect("the job still exists");
        assert!(job.state.is_terminal(), "{job:?}");
        assert!(!job.history.is_empty());
    }
    println!(
        "restart: {} completions acknowledged, {} backend errors seen by workers",
        *done.borrow(),
        errors.load(Ordering::SeqCst)
    );
}
