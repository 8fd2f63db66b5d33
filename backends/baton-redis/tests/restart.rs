//! Restarting Redis under load (AOF on, as `scripts/services` runs it) loses no job that was
//! acknowledged as enqueued: workers and producers see typed, retryable errors during the
//! outage, carry on once it is back, and every acknowledged job ends succeeded.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Error, JobId, JobState, NewJob, Owner, Queue, QueueName, RetryPolicy};

const JOBS: u64 = 2_000;
const WORKERS: usize = 6;

fn restart_redis() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");
    let status = std::process::Command::new(script)
        .args(["restart", "redis"])
        .status()
        .expect("scripts/services runs");
    assert!(status.success(), "scripts/services restart redis failed");
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

fn job(queue: &QueueName, n: u64) -> NewJob {
    NewJob::new(queue.clone(), serde_json::json!(n))
        .unwrap()
        .with_retry(RetryPolicy::exponential(50, Duration::from_millis(50)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_loses_no_acknowledged_job() {
    let config = support::config("r");
    let prefix = config.prefix.to_string();
    let backend = baton_redis::RedisBackend::connect(config).await.unwrap();
    let queue = QueueName::new("restart").unwrap();
    let jobs: Vec<NewJob> = (0..JOBS).map(|n| job(&queue, n)).collect();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<JobId>::new()));
    let ids = backend.enqueue_batch(&jobs).await.unwrap();
    acknowledged.lock().unwrap().extend(ids);

    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let completed_ids = Arc::new(Mutex::new(BTreeSet::<JobId>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let (backend, queue) = (backend.clone(), queue.clone());
        let (stop, completed, errors) = (stop.clone(), completed.clone(), errors.clone());
        let completed_ids = completed_ids.clone();
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
                        Ok(done) => {
                            assert!(
                                completed_ids.lock().unwrap().insert(done.id),
                                "job {} completed twice",
                                done.id
                            );
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
    // A producer keeps enqueueing through the restart; only the ids it was given count.
    let stop_producer = Arc::new(AtomicBool::new(false));
    let producer = {
        let (backend, queue, stop) = (backend.clone(), queue.clone(), stop_producer.clone());
        let (acknowledged, errors) = (acknowledged.clone(), errors.clone());
        tokio::spawn(async move {
            let mut n = JOBS;
            while !stop.load(Ordering::SeqCst) {
                match backend.enqueue(&job(&queue, n)).await {
                    Ok(id) => {
                        acknowledged.lock().unwrap().insert(id);
                    }
                    Err(error) => {
                        assert!(matches!(error, Error::Backend { .. }), "{error}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
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
    tokio::task::spawn_blocking(restart_redis).await.unwrap();

    // Let the producer enqueue some more after the restart, then stop it.
    let after_restart = acknowledged.lock().unwrap().len();
    tokio::time::timeout(Duration::from_secs(60), async {
        while acknowledged.lock().unwrap().len() < after_restart + 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the producer enqueued again after the restart");
    stop_producer.store(true, Ordering::SeqCst);
    producer.await.expect("the producer did not panic");
    let acknowledged: Vec<JobId> = acknowledged.lock().unwrap().iter().copied().collect();

    let unfinished = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let counts = retrying(|| backend.counts(&queue)).await;
            if counts.pending == 0 && counts.running == 0 {
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

    assert_eq!(unfinished.failed + unfinished.canceled, 0, "{unfinished:?}");
    for id in &acknowledged {
        let job = retrying(|| backend.get(*id))
            .await
            .unwrap_or_else(|| panic!("acknowledged job {id} was lost"));
        assert_eq!(job.state, JobState::Succeeded, "job {id}: {job:?}");
    }
    println!(
        "{} acknowledged jobs all succeeded; {} completions, {} errors during the restart",
        acknowledged.len(),
        completed.load(Ordering::SeqCst),
        errors.load(Ordering::SeqCst)
    );
    assert!(
        errors.load(Ordering::SeqCst) > 0,
        "the workers never noticed the restart"
    );
    support::delete_keys(&prefix).await;
}
