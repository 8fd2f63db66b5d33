//! One pool member in this process, on every backend: cancellation before, during and between
//! attempts, permanent failures, pausing, and (on the memory backend's manual clock) backoff.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{Backend, Clock, JobId, ManualClock, Timestamp};
use baton_memory::MemoryBackend;
use baton_workpool::{
    EnqueueOptions, HandlerError, JobStatus, Outcome, PoolConfig, RetryBehavior, WorkPool,
};
use serde_json::{Value, json};
use support::{Kind, Location, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// What the handlers of a test pool saw.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<(JobId, u32)>>,
    cancel_observed: Mutex<Vec<JobId>>,
    callbacks: Mutex<Vec<(JobId, Outcome, Value)>>,
}

impl Seen {
    fn calls_of(&self, job: JobId) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, _)| *j == job)
            .count()
    }

    fn callbacks_of(&self, job: JobId) -> Vec<(Outcome, Value)> {
        self.callbacks
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, _, _)| *j == job)
            .map(|(_, o, c)| (o.clone(), c.clone()))
            .collect()
    }
}

fn config(max_parallelism: usize) -> PoolConfig {
    let mut config = PoolConfig::new("behaviour").unwrap();
    config.max_parallelism = max_parallelism;
    config.lease_ttl = Duration::from_secs(2);
    config.poll_interval = Duration::from_millis(50);
    config.cancel_grace = Duration::from_secs(10);
    config
}

/// A pool whose handlers record into `seen`:
/// - `succeed` returns its argument;
/// - `fail` fails (retryably) every time;
/// - `fail_permanently` fails permanently;
/// - `wait_for_cancel` waits for its cancellation signal, records it, and fails.
fn pool(backend: Arc<dyn Backend>, config: PoolConfig, seen: &Arc<Seen>) -> WorkPool {
    let pool = WorkPool::new(backend, config).unwrap();
    let s = seen.clone();
    pool.register("succeed", move |ctx, args| {
        s.calls.lock().unwrap().push((ctx.job, ctx.attempt));
        async move { Ok(args) }
    });
    let s = seen.clone();
    pool.register("fail", move |ctx, _| {
        s.calls.lock().unwrap().push((ctx.job, ctx.attempt));
        async move { Err(HandlerError::retryable("it broke")) }
    });
    let s = seen.clone();
    pool.register("fail_permanently", move |ctx, _| {
        s.calls.lock().unwrap().push((ctx.job, ctx.attempt));
        async move { Err(HandlerError::permanent("it can never work")) }
    });
    let s = seen.clone();
    pool.register("wait_for_cancel", move |ctx, _| {
        s.calls.lock().unwrap().push((ctx.job, ctx.attempt));
        let s = s.clone();
        async move {
            ctx.cancel.canceled().await;
            s.cancel_observed.lock().unwrap().push(ctx.job);
            Err(HandlerError::retryable("stopped on cancel"))
        }
    });
    let s = seen.clone();
    pool.on_complete("record", move |completion| {
        s.callbacks
            .lock()
            .unwrap()
            .push((completion.job, completion.outcome, completion.context));
        async { Ok(()) }
    });
    pool
}

fn with_callback(retry: RetryBehavior) -> EnqueueOptions {
    EnqueueOptions::new()
        .with_retry(retry)
        .on_complete("record", json!({"note": "context"}))
        .with_name("test job")
}

async fn status(pool: &WorkPool, job: JobId) -> JobStatus {
    pool.status(job).await.unwrap()
}

async fn finished(pool: &WorkPool, job: JobId) -> (Outcome, u32) {
    eventually("the job to finish", WAIT, || async {
        match status(pool, job).await {
            JobStatus::Finished { outcome, attempts } => Some((outcome, attempts)),
            _ => None,
        }
    })
    .await
}

async fn one_callback(seen: &Seen, job: JobId) -> Outcome {
    let callbacks = eventually("the completion callback", WAIT, || async {
        let callbacks = seen.callbacks_of(job);
        (!callbacks.is_empty()).then_some(callbacks)
    })
    .await;
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(callbacks[0].1, json!({"note": "context"}));
    callbacks[0].0.clone()
}

/// Waits until every completion record of the pool has been run, so that a duplicate call
/// would have been seen.
async fn completion_records_drained(backend: &Arc<dyn Backend>, pool: &WorkPool) {
    eventually("completion records to drain", WAIT, || async {
        let counts = backend.counts(pool.completion_queue()).await.unwrap();
        (counts.pending + counts.running == 0).then_some(())
    })
    .await;
}

async fn cancel_before_start(location: Location) {
    support::init_tracing();
    tracing::info!(backend = location.kind.name(), "scenario");
    let backend = location.connect().await;
    let seen = Arc::new(Seen::default());
    let pool = pool(backend.clone(), config(0), &seen);
    let member = pool.start();
    let job = pool
        .enqueue("succeed", json!(1), with_callback(RetryBehavior::never()))
        .await
        .unwrap();
    assert!(matches!(
        status(&pool, job).await,
        JobStatus::Pending {
            previous_attempts: 0,
            ..
        }
    ));
    let after = pool.cancel(job).await.unwrap();
    assert!(
        matches!(
            after,
            JobStatus::Finished {
                outcome: Outcome::Canceled,
                attempts: 0
            }
        ),
        "{after:?}"
    );
    assert_eq!(one_callback(&seen, job).await, Outcome::Canceled);

    // Unpaused, the pool runs new work but never the canceled job.
    pool.set_max_parallelism(2).await.unwrap();
    let other = pool
        .enqueue("succeed", json!(2), EnqueueOptions::new())
        .await
        .unwrap();
    assert_eq!(
        finished(&pool, other).await.0,
        Outcome::Succeeded { result: json!(2) }
    );
    completion_records_drained(&backend, &pool).await;
    assert_eq!(seen.calls_of(job), 0);
    assert_eq!(seen.callbacks_of(job).len(), 1);
    member.shutdown().await;
    location.clean_up().await;
}

async fn cancel_while_running(location: Location) {
    support::init_tracing();
    tracing::info!(backend = location.kind.name(), "scenario");
    let backend = location.connect().await;
    let seen = Arc::new(Seen::default());
    let pool = pool(backend.clone(), config(2), &seen);
    let member = pool.start();
    let retry = RetryBehavior::new(5, Duration::from_millis(10), 2.0);
    let job = pool
        .enqueue("wait_for_cancel", Value::Null, with_callback(retry))
        .await
        .unwrap();
    eventually("the job to start", WAIT, || async {
        (seen.calls_of(job) == 1).then_some(())
    })
    .await;
    pool.cancel(job).await.unwrap();
    eventually("the handler to see its cancellation", WAIT, || async {
        seen.cancel_observed
            .lock()
            .unwrap()
            .contains(&job)
            .then_some(())
    })
    .await;
    assert_eq!(finished(&pool, job).await, (Outcome::Canceled, 1));
    assert_eq!(one_callback(&seen, job).await, Outcome::Canceled);

    // The handler failed retryably after the cancel: no retry follows. Work enqueued after it
    // runs, so the pool was free to retry had it been going to.
    let later = pool
        .enqueue("succeed", json!("later"), EnqueueOptions::new())
        .await
        .unwrap();
    finished(&pool, later).await;
    completion_records_drained(&backend, &pool).await;
    assert_eq!(seen.calls_of(job), 1);
    assert_eq!(seen.callbacks_of(job).len(), 1);
    assert!(matches!(
        status(&pool, job).await,
        JobStatus::Finished {
            outcome: Outcome::Canceled,
            ..
        }
    ));
    member.shutdown().await;
    location.clean_up().await;
}

async fn cancel_between_retries(location: Location) {
    support::init_tracing();
    tracing::info!(backend = location.kind.name(), "scenario");
    let backend = location.connect().await;
    let seen = Arc::new(Seen::default());
    let pool = pool(backend.clone(), config(2), &seen);
    let member = pool.start();
    let retry = RetryBehavior::new(3, Duration::from_secs(3600), 2.0);
    let job = pool
        .enqueue("fail", Value::Null, with_callback(retry))
        .await
        .unwrap();
    eventually("the first attempt to fail", WAIT, || async {
        matches!(
            status(&pool, job).await,
            JobStatus::Pending {
                previous_attempts: 1,
                ..
            }
        )
        .then_some(())
    })
    .await;
    pool.cancel(job).await.unwrap();
    assert_eq!(finished(&pool, job).await, (Outcome::Canceled, 1));
    assert_eq!(one_callback(&seen, job).await, Outcome::Canceled);
    completion_records_drained(&backend, &pool).await;
    assert_eq!(seen.calls_of(job), 1);
    member.shutdown().await;
    location.clean_up().await;
}

async fn permanent_failure(location: Location) {
    support::init_tracing();
    tracing::info!(backend = location.kind.name(), "scenario");
    let backend = location.connect().await;
    let seen = Arc::new(Seen::default());
    let pool = pool(backend.clone(), config(2), &seen);
    let member = pool.start();
    let retry = RetryBehavior::new(5, Duration::from_millis(1), 1.0);
    let job = pool
        .enqueue("fail_permanently", Value::Null, with_callback(retry))
        .await
        .unwrap();
    let (outcome, attempts) = finished(&pool, job).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: "it can never work".to_owned()
        }
    );
    assert_eq!(attempts, 1);
    assert_eq!(one_callback(&seen, job).await, outcome);
    completion_records_drained(&backend, &pool).await;
    assert_eq!(seen.calls_of(job), 1);

    // Without a retry behaviour (the default), a retryable failure is final too.
    let once = pool
        .enqueue("fail", Value::Null, EnqueueOptions::new())
        .await
        .unwrap();
    assert_eq!(
        finished(&pool, once).await,
        (
            Outcome::Failed {
                error: "it broke".to_owned()
            },
            1
        )
    );
    member.shutdown().await;
    location.clean_up().await;
}

async fn retries_until_success(location: Location) {
    support::init_tracing();
    tracing::info!(backend = location.kind.name(), "scenario");
    let backend = location.connect().await;
    let seen = Arc::new(Seen::default());
    let pool = pool(backend.clone(), config(3), &seen);
    let s = seen.clone();
    pool.register("fail_twice", move |ctx, _| {
        s.calls.lock().unwrap().push((ctx.job, ctx.attempt));
        async move {
            if ctx.attempt < 3 {
                Err(HandlerError::retryable(format!("attempt {}", ctx.attempt)))
            } else {
                Ok(json!("third time lucky"))
            }
        }
    });
    let member = pool.start();
    let retry = RetryBehavior::new(4, Duration::from_millis(20), 2.0);
    let ids = pool
        .enqueue_batch((0..5).map(|_| ("fail_twice".to_owned(), Value::Null, with_callback(retry))))
        .await
        .unwrap();
    for job in &ids {
        assert_eq!(
            finished(&pool, *job).await,
            (
                Outcome::Succeeded {
                    result: json!("third time lucky")
                },
                3
            )
        );
        assert!(matches!(
            one_callback(&seen, *job).await,
            Outcome::Succeeded { .. }
        ));
    }
    let statuses = pool.status_batch(&ids).await.unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(JobStatus::is_finished))
    );
    member.shutdown().await;
    assert_eq!(pool.stats().retries, 10);
    location.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_canceled_before_it_starts_never_runs_and_reports_canceled_once() {
    for kind in Kind::ALL {
        cancel_before_start(Location::fresh(kind)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_sees_its_cancellation_and_is_never_retried() {
    for kind in Kind::ALL {
        cancel_while_running(Location::fresh(kind)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_canceled_between_retries_is_never_retried() {
    for kind in Kind::ALL {
        cancel_between_retries(Location::fresh(kind)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_skips_the_remaining_retries() {
    for kind in Kind::ALL {
        permanent_failure(Location::fresh(kind)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_until_one_succeeds() {
    for kind in Kind::ALL {
        retries_until_success(Location::fresh(kind)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_delays_grow_by_the_configured_base_on_the_backend_clock() {
    let clock = ManualClock::default();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::with_clock(Arc::new(clock.clone())));
    let seen = Arc::new(Seen::default());
    let pool = pool(backend.clone(), config(1), &seen);
    let times: Arc<Mutex<Vec<Timestamp>>> = Arc::default();
    let (t, c) = (times.clone(), clock.clone());
    pool.register("fail_and_note_the_time", move |_, _| {
        t.lock().unwrap().push(c.now());
        async { Err(HandlerError::retryable("not yet")) }
    });
    let member = pool.start();
    let retry = RetryBehavior::new(5, Duration::from_millis(1000), 3.0).with_jitter(0.0);
    let job = pool
        .enqueue(
            "fail_and_note_the_time",
            Value::Null,
            EnqueueOptions::new().with_retry(retry),
        )
        .await
        .unwrap();
    let mut delays = Vec::new();
    for attempt in 1..5u32 {
        let run_at = eventually("the attempt to fail and be rescheduled", WAIT, || async {
            match status(&pool, job).await {
                JobStatus::Pending {
                    previous_attempts,
                    run_at,
                } if previous_attempts == attempt => Some(run_at),
                _ => None,
            }
        })
        .await;
        let failed_at = times.lock().unwrap()[attempt as usize - 1];
        delays.push(run_at.duration_since(failed_at).as_millis());
        // Just before it is due the job stays pending; at its time it runs.
        clock.set(Timestamp::from_millis(run_at.as_millis() - 1));
        assert!(matches!(
            status(&pool, job).await,
            JobStatus::Pending { .. }
        ));
        clock.set(run_at);
        eventually("the retry to run", WAIT, || async {
            (times.lock().unwrap().len() > attempt as usize).then_some(())
        })
        .await;
        assert_eq!(times.lock().unwrap()[attempt as usize], run_at);
    }
    assert_eq!(delays, [1000, 3000, 9000, 27000]);
    assert_eq!(
        finished(&pool, job).await,
        (
            Outcome::Failed {
                error: "not yet".to_owned()
            },
            5
        )
    );

    // A delayed job waits for its time on the backend's clock.
    let start = clock.now();
    let delayed = pool
        .enqueue(
            "succeed",
            json!("late"),
            EnqueueOptions::new().run_after(Duration::from_secs(90)),
        )
        .await
        .unwrap();
    let JobStatus::Pending { run_at, .. } = status(&pool, delayed).await else {
        panic!("a delayed job is pending")
    };
    assert_eq!(run_at.duration_since(start), Duration::from_secs(90));
    clock.advance(Duration::from_secs(90));
    assert_eq!(
        finished(&pool, delayed).await.0,
        Outcome::Succeeded {
            result: json!("late")
        }
    );
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_limit_at_run_time_starts_more_jobs_at_once() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let seen = Arc::new(Seen::default());
    let pool = pool(backend, config(1), &seen);
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (r, p, gate) = (running.clone(), peak.clone(), release.clone());
    pool.register("hold", move |_, _| {
        let (r, p, gate) = (r.clone(), p.clone(), gate.clone());
        async move {
            let now = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            p.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            gate.notified().await;
            r.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Value::Null)
        }
    });
    let member = pool.start();
    let ids = pool
        .enqueue_batch((0..4).map(|_| ("hold".to_owned(), Value::Null, EnqueueOptions::new())))
        .await
        .unwrap();
    let load = |counter: &Arc<std::sync::atomic::AtomicUsize>| {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    };
    eventually("one job to run", WAIT, || async {
        (load(&running) == 1).then_some(())
    })
    .await;
    // Two more jobs wait while the limit is 1; raised to 3, they start.
    let pending = pool.status_batch(&ids).await.unwrap();
    let waiting = pending
        .iter()
        .filter(|s| matches!(s, Some(JobStatus::Pending { .. })))
        .count();
    assert_eq!(waiting, 3);
    pool.set_max_parallelism(3).await.unwrap();
    eventually("three jobs to run", WAIT, || async {
        (load(&running) == 3).then_some(())
    })
    .await;
    assert_eq!(load(&peak), 3);
    // Lowered to 0, nothing new starts once the running ones end.
    pool.set_max_parallelism(0).await.unwrap();
    release.notify_waiters();
    eventually("the three to end", WAIT, || async {
        (load(&running) == 0).then_some(())
    })
    .await;
    let statuses = pool.status_batch(&ids).await.unwrap();
    let still_pending = statuses
        .iter()
        .filter(|s| matches!(s, Some(JobStatus::Pending { .. })))
        .count();
    assert_eq!(still_pending, 1);
    assert_eq!(load(&peak), 3);
    pool.set_max_parallelism(1).await.unwrap();
    eventually("the last job to run", WAIT, || async {
        (load(&running) == 1).then_some(())
    })
    .await;
    release.notify_waiters();
    for id in ids {
        finished(&pool, id).await;
    }
    member.shutdown().await;
}
