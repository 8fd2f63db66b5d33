//! Cases for [`Queue`]'s storage and ordering: what is due, in which order, and what is recorded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{AttemptOutcome, Backend, JobId, JobState, Priority, Queue, QueueCounts, Retry};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, SHORT_TTL, ensure, expect_lease_lost, expect_nothing_due,
    job, join_all, owner, queue, reserve_one,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "jobs of equal priority are reserved in enqueue order",
            fifo_order
        ),
        case!("higher priority jobs are reserved first", priority_order),
        case!(
            "among due jobs of equal priority the earliest due comes first",
            run_at_order
        ),
        case!(
            "a delayed job is not reserved before its time and is reserved after",
            delayed_job
        ),
        case!(
            "reserve takes jobs from several queues and only from the queues named",
            several_queues
        ),
        case!("reserve returns at most max jobs", reserve_max),
        case!(
            "complete_and_reserve completes the job and reserves the next, even after a lost lease",
            complete_and_reserve
        ),
        case!(
            "concurrent reservers never receive the same job, and each holds the lease it got",
            concurrent_reservers
        ),
        case!(
            "enqueue_batch stores jobs in order and returns ids that can be fetched",
            batch_in_order
        ),
        case!("get, last and counts describe the queue", get_last_counts),
        case!("get of an unknown job is none", get_unknown),
        case!(
            "a reserved job is running with its attempt counted and recorded",
            reserve_records_attempt
        ),
        case!(
            "completing a job records success, its result and the finish time",
            complete_records
        ),
    ]
}

async fn enqueue_numbered<B: Queue>(
    backend: &B,
    queue: &baton_core::QueueName,
    count: usize,
) -> Result<Vec<JobId>, String> {
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(
            backend
                .enqueue(&job(queue, json!({ "n": n }))?)
                .await
                .ctx("enqueue")?,
        );
    }
    Ok(ids)
}

async fn fifo_order<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let ids = enqueue_numbered(&h.backend, &jobs, 5).await?;
    ensure!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids of jobs enqueued one after another do not increase: {ids:?}"
    );
    let worker = owner("worker")?;
    let mut order = Vec::new();
    for _ in 0..2 {
        order.push(
            reserve_one(&h.backend, &jobs, &worker, LONG_TTL)
                .await?
                .job
                .id,
        );
    }
    let rest = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &worker, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    order.extend(rest.iter().map(|r| r.job.id));
    ensure!(
        order == ids,
        "reserved in the order {order:?}, enqueued as {ids:?}"
    );
    Ok(())
}

async fn priority_order<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let mut by_priority = Vec::new();
    for priority in [0, 10, -5, 5, 10] {
        let id = h
            .backend
            .enqueue(
                &job(&jobs, json!({ "priority": priority }))?.with_priority(Priority(priority)),
            )
            .await
            .ctx("enqueue")?;
        by_priority.push((priority, id));
    }
    by_priority.sort_by_key(|&(priority, id)| (-priority, id));
    let expected: Vec<JobId> = by_priority.iter().map(|&(_, id)| id).collect();
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &owner("worker")?, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    let order: Vec<JobId> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(
        order == expected,
        "reserved in the order {order:?}, expected {expected:?} (priority, then id)"
    );
    for r in &reserved {
        let enqueued = by_priority
            .iter()
            .find(|(_, id)| *id == r.job.id)
            .map(|&(priority, _)| Priority(priority));
        ensure!(
            Some(r.job.priority) == enqueued,
            "job {} carries priority {:?}, enqueued with {enqueued:?}",
            r.job.id,
            r.job.priority
        );
    }
    Ok(())
}

async fn run_at_order<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let delayed = h
        .backend
        .enqueue(&job(&jobs, json!("delayed"))?.with_delay(SHORT_TTL))
        .await
        .ctx("enqueue")?;
    let immediate = h
        .backend
        .enqueue(&job(&jobs, json!("immediate"))?)
        .await
        .ctx("enqueue")?;
    h.time.pass(PAST_SHORT_TTL).await;
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &owner("worker")?, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    let order: Vec<JobId> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(
        order == [immediate, delayed],
        "reserved {order:?}; the job due first ({immediate}) should come before the older but later-due {delayed}"
    );
    Ok(())
}

async fn delayed_job<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let delay = SHORT_TTL;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!("later"))?.with_delay(delay))
        .await
        .ctx("enqueue")?;
    let stored = h.backend.get(id).await.ctx("get")?.ctx("delayed job")?;
    ensure!(
        stored.state == JobState::Pending,
        "a delayed job is {}",
        stored.state
    );
    ensure!(
        stored.run_at.duration_since(stored.created_at) >= delay,
        "a job delayed by {delay:?} is due at {} though created at {}",
        stored.run_at,
        stored.created_at
    );
    expect_nothing_due(&h.backend, &jobs, "before the delay passed").await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    ensure!(
        reserved.job.id == id,
        "reserved {} instead of {id}",
        reserved.job.id
    );
    Ok(())
}

async fn several_queues<B: Backend>(h: Harness<B>) -> CaseResult {
    let (first, second, third) = (queue("first")?, queue("second")?, queue("third")?);
    let a = h
        .backend
        .enqueue(&job(&first, json!("a"))?)
        .await
        .ctx("enqueue")?;
    let b = h
        .backend
        .enqueue(&job(&second, json!("b"))?)
        .await
        .ctx("enqueue")?;
    let c = h
        .backend
        .enqueue(&job(&third, json!("c"))?)
        .await
        .ctx("enqueue")?;
    let worker = owner("worker")?;
    let reserved = h
        .backend
        .reserve(&[first.clone(), second.clone()], &worker, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    let got: BTreeSet<JobId> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(
        got == BTreeSet::from([a, b]),
        "reserve from first and second got {got:?}"
    );
    for r in &reserved {
        let expected = if r.job.id == a { &first } else { &second };
        ensure!(
            &r.job.queue == expected,
            "job {} reported in queue {}",
            r.job.id,
            r.job.queue
        );
    }
    let third_job = reserve_one(&h.backend, &third, &worker, LONG_TTL).await?;
    ensure!(
        third_job.job.id == c,
        "reserve from third got {}",
        third_job.job.id
    );
    Ok(())
}

async fn reserve_max<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    enqueue_numbered(&h.backend, &jobs, 5).await?;
    let worker = owner("worker")?;
    let mut sizes = Vec::new();
    for _ in 0..4 {
        let got = h
            .backend
            .reserve(std::slice::from_ref(&jobs), &worker, LONG_TTL, 2)
            .await
            .ctx("reserve")?;
        sizes.push(got.len());
    }
    ensure!(
        sizes == [2, 2, 1, 0],
        "reserve with max 2 returned batches of {sizes:?}"
    );
    Ok(())
}

async fn complete_and_reserve<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let ids = enqueue_numbered(&h.backend, &jobs, 4).await?;
    let worker = owner("worker")?;
    let first = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let (completed, next) = h
        .backend
        .complete_and_reserve(
            &first.lease,
            json!("done"),
            std::slice::from_ref(&jobs),
            &worker,
            LONG_TTL,
            2,
        )
        .await
        .ctx("complete_and_reserve")?;
    let completed = completed.ctx("the completion")?;
    ensure!(
        completed.id == ids[0] && completed.state == JobState::Succeeded,
        "completed {} as {}, expected {} succeeded",
        completed.id,
        completed.state,
        ids[0]
    );
    let got: Vec<JobId> = next.iter().map(|r| r.job.id).collect();
    ensure!(
        got == ids[1..3],
        "reserved {got:?}, expected {:?}",
        &ids[1..3]
    );
    ensure!(
        next.iter().all(|r| r.lease.lease.owner() == &worker),
        "a reserved job is leased to someone else"
    );
    let stored = h.backend.get(ids[0]).await.ctx("get")?.ctx("the job")?;
    ensure!(
        stored.result == Some(json!("done")),
        "the stored result is {:?}",
        stored.result
    );

    // Completing under a lease that is no longer current fails, and the reservation stands.
    let (stale, after) = h
        .backend
        .complete_and_reserve(
            &first.lease,
            json!("again"),
            std::slice::from_ref(&jobs),
            &worker,
            LONG_TTL,
            2,
        )
        .await
        .ctx("complete_and_reserve with a stale lease")?;
    expect_lease_lost(stale, "completing twice")?;
    let got: Vec<JobId> = after.iter().map(|r| r.job.id).collect();
    ensure!(
        got == ids[3..],
        "reserved {got:?}, expected {:?}",
        &ids[3..]
    );
    Ok(())
}

async fn concurrent_reservers<B: Backend + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let ids = enqueue_numbered(&h.backend, &jobs, 60).await?;
    let seen = Arc::new(Mutex::new(Vec::<JobId>::new()));
    let mut tasks = JoinSet::new();
    for task in 0..6 {
        let backend = h.backend.clone();
        let jobs = jobs.clone();
        let seen = seen.clone();
        let me = owner(&format!("worker-{task}"))?;
        tasks.spawn(async move {
            loop {
                let got = backend
                    .reserve(std::slice::from_ref(&jobs), &me, LONG_TTL, 3)
                    .await
                    .ctx("reserve")?;
                if got.is_empty() {
                    return Ok(());
                }
                ensure!(
                    got.len() <= 3,
                    "{} jobs for a reservation of at most 3",
                    got.len()
                );
                seen.lock().await.extend(got.iter().map(|r| r.job.id));
                // Each job is stored as leased to this worker: its lease completes it.
                for reserved in &got {
                    ensure!(
                        reserved.lease.lease.owner() == &me,
                        "job {} went to {me} under a lease of {}",
                        reserved.job.id,
                        reserved.lease.lease.owner()
                    );
                    backend
                        .complete(&reserved.lease, json!(null))
                        .await
                        .ctx("complete under the lease reserve gave")?;
                }
                tokio::task::yield_now().await;
            }
        });
    }
    join_all(tasks).await?;
    let seen = seen.lock().await.clone();
    let distinct: BTreeSet<JobId> = seen.iter().copied().collect();
    ensure!(
        distinct.len() == seen.len(),
        "{} reservations of {} distinct jobs: a job went to two workers",
        seen.len(),
        distinct.len()
    );
    ensure!(
        distinct == ids.iter().copied().collect(),
        "{} of {} jobs were reserved",
        distinct.len(),
        ids.len()
    );
    Ok(())
}

async fn batch_in_order<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let batch = (0..5)
        .map(|n| job(&jobs, json!({ "n": n })))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = h.backend.enqueue_batch(&batch).await.ctx("enqueue_batch")?;
    ensure!(
        ids.len() == 5,
        "enqueue_batch of 5 returned {} ids",
        ids.len()
    );
    ensure!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "batch ids are not in order: {ids:?}"
    );
    for (n, id) in ids.iter().enumerate() {
        let stored = h
            .backend
            .get(*id)
            .await
            .ctx("get")?
            .ctx(&format!("job {id} of the batch"))?;
        ensure!(
            stored.payload == json!({ "n": n })
                && stored.state == JobState::Pending
                && stored.queue == jobs,
            "batch job {id} stored as {stored:?}, expected payload n = {n}"
        );
    }
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &owner("worker")?, LONG_TTL, 10)
        .await
        .ctx("reserve")?;
    let order: Vec<JobId> = reserved.iter().map(|r| r.job.id).collect();
    ensure!(
        order == ids,
        "batch reserved in the order {order:?}, ids {ids:?}"
    );
    match h.backend.enqueue_batch(&[]).await {
        Ok(none) => ensure!(none.is_empty(), "an empty batch returned ids {none:?}"),
        Err(baton_core::Error::InvalidInput(_)) => {}
        Err(other) => return Err(format!("enqueue an empty batch: {other}")),
    }
    Ok(())
}

async fn get_last_counts<B: Backend>(h: Harness<B>) -> CaseResult {
    let (a, b, empty) = (queue("a")?, queue("b")?, queue("empty")?);
    let a_ids = enqueue_numbered(&h.backend, &a, 3).await?;
    let b_ids = enqueue_numbered(&h.backend, &b, 1).await?;
    let last_a = h.backend.last(&a).await.ctx("last")?.ctx("last of a")?;
    ensure!(
        last_a.id == a_ids[2],
        "last of a is {}, expected {}",
        last_a.id,
        a_ids[2]
    );
    let last_b = h.backend.last(&b).await.ctx("last")?.ctx("last of b")?;
    ensure!(last_b.id == b_ids[0], "last of b is {}", last_b.id);
    let none = h.backend.last(&empty).await.ctx("last")?;
    ensure!(none.is_none(), "last of an empty queue is {none:?}");
    let counts = h.backend.counts(&a).await.ctx("counts")?;
    ensure!(
        counts
            == QueueCounts {
                pending: 3,
                ..QueueCounts::default()
            },
        "counts of a with three new jobs: {counts:?}"
    );
    let worker = owner("worker")?;
    let reserved = h
        .backend
        .reserve(std::slice::from_ref(&a), &worker, LONG_TTL, 2)
        .await
        .ctx("reserve")?;
    ensure!(reserved.len() == 2, "reserved {} of a", reserved.len());
    reserve_one(&h.backend, &b, &worker, LONG_TTL).await?;
    let counts = h.backend.counts(&a).await.ctx("counts")?;
    ensure!(
        counts
            == QueueCounts {
                pending: 1,
                running: 2,
                ..QueueCounts::default()
            },
        "counts of a with two running: {counts:?}"
    );
    h.backend
        .complete(&reserved[0].lease, json!("ok"))
        .await
        .ctx("complete")?;
    h.backend
        .fail(&reserved[1].lease, "no", Retry::Never)
        .await
        .ctx("fail")?;
    h.backend.cancel(a_ids[2]).await.ctx("cancel")?;
    let counts = h.backend.counts(&a).await.ctx("counts")?;
    ensure!(
        counts
            == QueueCounts {
                succeeded: 1,
                failed: 1,
                canceled: 1,
                ..QueueCounts::default()
            },
        "counts of a after complete, fail and cancel: {counts:?}"
    );
    let counts = h.backend.counts(&b).await.ctx("counts")?;
    ensure!(
        counts
            == QueueCounts {
                running: 1,
                ..QueueCounts::default()
            },
        "counts of b: {counts:?}"
    );
    let counts = h.backend.counts(&empty).await.ctx("counts")?;
    ensure!(
        counts == QueueCounts::default(),
        "counts of an empty queue: {counts:?}"
    );
    let first = h
        .backend
        .get(a_ids[0])
        .await
        .ctx("get")?
        .ctx("first job of a")?;
    ensure!(
        first.queue == a && first.payload == json!({ "n": 0 }) && first.created_at <= first.run_at,
        "first job of a stored as {first:?}"
    );
    let last_a = h.backend.last(&a).await.ctx("last")?.ctx("last of a")?;
    ensure!(
        last_a.id == a_ids[2] && last_a.state == JobState::Canceled,
        "last of a after cancel is {last_a:?}"
    );
    Ok(())
}

async fn get_unknown<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!(1))?)
        .await
        .ctx("enqueue")?;
    for unknown in [
        JobId::new(id.get() + 1000),
        JobId::new(i64::MAX),
        JobId::new(-1),
    ] {
        let got = h.backend.get(unknown).await.ctx("get")?;
        ensure!(
            got.is_none(),
            "get of unknown job {unknown} returned {got:?}"
        );
    }
    Ok(())
}

async fn reserve_records_attempt<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!({"task": "x"}))?)
        .await
        .ctx("enqueue")?;
    let pending = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        pending.state == JobState::Pending
            && pending.attempts == 0
            && pending.history.is_empty()
            && pending.lease.is_none()
            && pending.finished_at.is_none(),
        "a new job is stored as {pending:?}"
    );
    let worker = owner("worker")?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let running = &reserved.job;
    ensure!(
        running.state == JobState::Running,
        "a reserved job is {}",
        running.state
    );
    ensure!(
        running.attempts == 1,
        "a reserved job has {} attempts",
        running.attempts
    );
    ensure!(
        running.lease.as_ref() == Some(&reserved.lease.lease),
        "job lease {:?} differs from the grant {:?}",
        running.lease,
        reserved.lease.lease
    );
    ensure!(
        reserved.lease.lease.owner() == &worker,
        "lease owner {}",
        reserved.lease.lease.owner()
    );
    ensure!(running.history.len() == 1, "history: {:?}", running.history);
    let attempt = &running.history[0];
    ensure!(
        attempt.number == 1
            && attempt.owner == worker
            && attempt.finished_at.is_none()
            && attempt.outcome.is_none(),
        "first attempt recorded as {attempt:?}"
    );
    let lease_length = reserved
        .lease
        .lease
        .expires_at()
        .duration_since(attempt.started_at);
    ensure!(
        lease_length > LONG_TTL - Duration::from_secs(5)
            && lease_length <= LONG_TTL + Duration::from_secs(5),
        "a lease of {LONG_TTL:?} expires {lease_length:?} after the attempt started"
    );
    let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        stored.state == JobState::Running
            && stored.attempts == 1
            && stored.history == running.history,
        "stored job {stored:?} differs from the reserved one"
    );
    Ok(())
}

async fn complete_records<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!({"task": "x"}))?)
        .await
        .ctx("enqueue")?;
    let worker = owner("worker")?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let done = h
        .backend
        .complete(&reserved.lease, json!({"answer": 42}))
        .await
        .ctx("complete")?;
    ensure!(
        done.id == id && done.state == JobState::Succeeded,
        "completed job is {done:?}"
    );
    ensure!(
        done.result == Some(json!({"answer": 42})),
        "result is {:?}",
        done.result
    );
    ensure!(
        done.lease.is_none(),
        "a succeeded job still has lease {:?}",
        done.lease
    );
    let finished = done.finished_at.ctx("finished_at of a succeeded job")?;
    ensure!(
        finished >= done.created_at,
        "finished at {finished}, created at {}",
        done.created_at
    );
    ensure!(done.history.len() == 1, "history: {:?}", done.history);
    let attempt = &done.history[0];
    ensure!(
        attempt.outcome == Some(AttemptOutcome::Succeeded) && attempt.finished_at.is_some(),
        "attempt recorded as {attempt:?}"
    );
    let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        stored == done,
        "stored job {stored:?} differs from the one complete returned {done:?}"
    );
    Ok(())
}
