//! Restarting PostgreSQL under load loses no job: workers see typed, retryable errors during
//! the outage, carry on once it is back, and every job ends in a terminal state.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use baton_core::{Error, NewJob, Owner, Queue, QueueName, RetryPolicy};

const JOBS: u64 = 2_000;
const WORKERS: usize = 6;

fn restart_postgres() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");
    let status = std::process::Command::new(script)
        .args(["restart", "postgres"])
        .status()
        .expect("scripts/services runs");
    assert!(status.success(), "scripts/services restart postgres failed");
}

/// Calls `attempt` until it succeeds, tolerating transient backend errors for up to a minute.
async fn retrying<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = baton_core::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if tokio::time::Instant::now() < deadline => {
                assert!(matches!(error, Error::Backend { .. }), "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the backend did not come back: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_job() {
    let config = support::config("r");
    let prefix = config.prefix.to_string();
    let backend = baton_postgres::PostgresBackend::connect(config)
        .await
        .unwrap();
    let queue = QueueName::new("restart").unwrap();
    let retry = RetryPolicy::exponential(50, Duration::from_millis(50));
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|n| {
            NewJob::new(queue.clone(), serde_json::json!(n))
                .unwrap()
                .with_retry(retry)
                .unwrap()
        })
        .collect();
    backend.enqueue_batch(&jobs).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let (backend, queue) = (backend.clone(), queue.clone());
        let (stop, completed, errors) = (stop.clone(), completed.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let owner = Owner::new(format!("worker-{n}")).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let reserved = match backend
                    .reserve(
                        std::slice::from_ref(&queue),
                        &owner,
                        Duration::from_secs(2),
                        8,
                    )
                    .await
                {
                    Ok(reserved) => reserved,
                    Err(error) => {
                        assert!(matches!(error, Error::Backend { .. }), "{error}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if reserved.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                for job in reserved {
                    match backend
                        .complete(&job.lease, serde_json::json!("done"))
                        .await
                    {
                        Ok(_) => {
                            completed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(error) => {
                            assert!(
                                matches!(error, Error::Backend { .. } | Error::LeaseLost { .. }),
                                "{error}"
                            );
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        }));
    }
    let reaper = {
        let (backend, stop) = (backend.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = backend.requeue_expired().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    tokio::time::timeout(Duration::from_secs(60), async {
        while completed.load(Ordering::SeqCst) < JOBS / 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("workers made progress before the restart");
    tokio::task::spawn_blocking(restart_postgres).await.unwrap();

    let counts = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let counts = retrying(|| backend.counts(&queue)).await;
            if counts.succeeded + counts.failed + counts.canceled == JOBS {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every job reached a terminal state after the restart");
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("no worker panicked");
    }
    reaper.await.expect("the reaper did not panic");

    assert_eq!(counts.total(), JOBS, "{counts:?}");
    assert_eq!(counts.succeeded, JOBS, "{counts:?}");
    println!(
        "completed {} calls, {} errors during the restart",
        completed.load(Ordering::SeqCst),
        errors.load(Ordering::SeqCst)
    );
    assert!(
        errors.load(Ordering::SeqCst) > 0,
        "the workers never noticed the restart"
    );
    support::drop_tables(backend.pool(), &prefix).await;
}
