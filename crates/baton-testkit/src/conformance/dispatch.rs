//! Cases for [`Dispatch`]: job-state notifications and wake-ups for idle workers.

use baton_core::{Backend, EventStream, JobEvent, JobId, JobState, QueueName, Retry, WakeStream};
use futures::StreamExt;
use serde_json::json;

use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, SHORT_TTL, ensure, immediate_retries, job, job_with_retry,
    let_others_run, owner, queue, reserve_one, within,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "a subscriber sees every state change of a job through to its end",
            subscriber_sees_lifecycle
        ),
        case!(
            "a subscriber sees a pending job canceled and its stream ends",
            subscriber_sees_cancel
        ),
        case!(
            "a subscriber sees an expired attempt requeued",
            subscriber_sees_requeue
        ),
        case!(
            "a published event reaches every subscriber of that job and only them",
            publish_reaches_subscribers
        ),
        case!(
            "a waiting worker is woken by wake without polling",
            woken_by_wake
        ),
        case!(
            "a waiting worker is woken by an enqueue without polling",
            woken_by_enqueue
        ),
        case!(
            "every open wakeup stream of a queue receives its wake",
            every_stream_woken
        ),
        case!(
            "a wakeup stream is woken by each of its queues, whatever other queues are woken",
            woken_by_each_queue
        ),
    ]
}

/// The next event of `stream`, within the event timeout.
async fn next_event(stream: &mut EventStream, what: &str) -> Result<JobEvent, String> {
    within(what, stream.next())
        .await?
        .ctx(&format!("{what}: the stream ended"))
}

/// Checks that `stream` ends (yields nothing more) within the event timeout.
async fn expect_end(stream: &mut EventStream, what: &str) -> CaseResult {
    let extra = within(what, stream.next()).await?;
    ensure!(
        extra.is_none(),
        "{what}: the stream yielded {extra:?} instead of ending"
    );
    Ok(())
}

/// Waits until `stream` yields `queue`; wakes of other queues are skipped (spurious wakes are
/// allowed, lost ones are not).
pub(super) async fn next_wake_of(
    stream: &mut WakeStream,
    queue: &QueueName,
    what: &str,
) -> CaseResult {
    within(what, async {
        while let Some(woken) = stream.next().await {
            if woken == *queue {
                return Ok(());
            }
        }
        Err(format!("{what}: the wakeup stream ended"))
    })
    .await?
}

fn expect_event(
    event: &JobEvent,
    id: JobId,
    queue: &QueueName,
    state: JobState,
    attempts: u32,
) -> CaseResult {
    ensure!(
        event.job == id
            && &event.queue == queue
            && event.state == state
            && event.attempts == attempts,
        "got event {event:?}, expected job {id} in {queue} {state} after {attempts} attempts"
    );
    Ok(())
}

async fn subscriber_sees_lifecycle<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(3))?)
        .await
        .ctx("enqueue")?;
    let mut events = h.backend.subscribe(id).await.ctx("subscribe")?;
    let worker = owner("worker")?;
    let first = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .fail(&first.lease, "flaky", Retry::ByPolicy)
        .await
        .ctx("fail")?;
    let second = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .complete(&second.lease, json!("ok"))
        .await
        .ctx("complete")?;
    let expected = [
        (JobState::Running, 1),
        (JobState::Pending, 1),
        (JobState::Running, 2),
        (JobState::Succeeded, 2),
    ];
    for (index, (state, attempts)) in expected.into_iter().enumerate() {
        let event = next_event(&mut events, &format!("event {} of the job", index + 1)).await?;
        expect_event(&event, id, &jobs, state, attempts)?;
    }
    expect_end(&mut events, "after the succeeded event").await
}

async fn subscriber_sees_cancel<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!({}))?)
        .await
        .ctx("enqueue")?;
    let mut events = h.backend.subscribe(id).await.ctx("subscribe")?;
    let current = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        current.state == JobState::Pending,
        "new job is {}",
        current.state
    );
    h.backend.cancel(id).await.ctx("cancel")?;
    let event = next_event(&mut events, "cancel event").await?;
    expect_event(&event, id, &jobs, JobState::Canceled, 0)?;
    expect_end(&mut events, "after the canceled event").await
}

async fn subscriber_sees_requeue<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(2))?)
        .await
        .ctx("enqueue")?;
    let mut events = h.backend.subscribe(id).await.ctx("subscribe")?;
    reserve_one(&h.backend, &jobs, &owner("dead-worker")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    h.backend.requeue_expired().await.ctx("requeue_expired")?;
    reserve_one(&h.backend, &jobs, &owner("dead-worker")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    h.backend.requeue_expired().await.ctx("requeue_expired")?;
    let expected = [
        (JobState::Running, 1),
        (JobState::Pending, 1),
        (JobState::Running, 2),
        (JobState::Failed, 2),
    ];
    for (index, (state, attempts)) in expected.into_iter().enumerate() {
        let event = next_event(&mut events, &format!("event {} of the job", index + 1)).await?;
        expect_event(&event, id, &jobs, state, attempts)?;
    }
    expect_end(&mut events, "after the failed event").await
}

async fn publish_reaches_subscribers<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let x = h
        .backend
        .enqueue(&job(&jobs, json!("x"))?)
        .await
        .ctx("enqueue")?;
    let y = h
        .backend
        .enqueue(&job(&jobs, json!("y"))?)
        .await
        .ctx("enqueue")?;
    let mut x_first = h.backend.subscribe(x).await.ctx("subscribe")?;
    let mut x_second = h.backend.subscribe(x).await.ctx("subscribe")?;
    let mut y_only = h.backend.subscribe(y).await.ctx("subscribe")?;
    let x_event = JobEvent {
        job: x,
        queue: jobs.clone(),
        state: JobState::Running,
        attempts: 7,
    };
    h.backend.publish(&x_event).await.ctx("publish")?;
    for stream in [&mut x_first, &mut x_second] {
        let got = next_event(stream, "published event").await?;
        ensure!(
            got == x_event,
            "subscriber of {x} got {got:?}, published {x_event:?}"
        );
    }
    let y_event = JobEvent {
        job: y,
        queue: jobs.clone(),
        state: JobState::Succeeded,
        attempts: 1,
    };
    h.backend.publish(&y_event).await.ctx("publish")?;
    let got = next_event(&mut y_only, "published event").await?;
    ensure!(
        got == y_event,
        "subscriber of {y} got {got:?}, expected only {y_event:?}"
    );
    expect_end(&mut y_only, "after a published terminal event").await
}

async fn woken_by_wake<B: Backend + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let mut wakeups = h
        .backend
        .wakeups(std::slice::from_ref(&jobs))
        .await
        .ctx("wakeups")?;
    let idle = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &owner("worker")?, LONG_TTL, 1)
        .await
        .ctx("reserve")?;
    ensure!(
        idle.is_empty(),
        "an empty queue handed out {} jobs",
        idle.len()
    );
    let backend = h.backend.clone();
    let woken = jobs.clone();
    let waker = tokio::spawn(async move {
        let_others_run().await;
        backend.wake(&woken).await
    });
    next_wake_of(&mut wakeups, &jobs, "wake from another task").await?;
    within("waker", waker).await?.ctx("join")?.ctx("wake")?;
    Ok(())
}

async fn woken_by_enqueue<B: Backend + Clone + 'static>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    let mut wakeups = h
        .backend
        .wakeups(std::slice::from_ref(&jobs))
        .await
        .ctx("wakeups")?;
    let idle = h
        .backend
        .reserve(std::slice::from_ref(&jobs), &worker, LONG_TTL, 1)
        .await
        .ctx("reserve")?;
    ensure!(
        idle.is_empty(),
        "an empty queue handed out {} jobs",
        idle.len()
    );
    let backend = h.backend.clone();
    let new_job = job(&jobs, json!("wake up"))?;
    let producer = tokio::spawn(async move {
        let_others_run().await;
        backend.enqueue(&new_job).await
    });
    next_wake_of(&mut wakeups, &jobs, "wake from an enqueue in another task").await?;
    let id = within("producer", producer)
        .await?
        .ctx("join")?
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        reserved.job.id == id,
        "woken worker reserved {} instead of {id}",
        reserved.job.id
    );
    Ok(())
}

async fn every_stream_woken<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let other = queue("other")?;
    let mut streams = [
        h.backend
            .wakeups(std::slice::from_ref(&jobs))
            .await
            .ctx("wakeups")?,
        h.backend
            .wakeups(std::slice::from_ref(&jobs))
            .await
            .ctx("wakeups")?,
        h.backend
            .wakeups(&[other, jobs.clone()])
            .await
            .ctx("wakeups")?,
    ];
    h.backend.wake(&jobs).await.ctx("wake")?;
    for (index, stream) in streams.iter_mut().enumerate() {
        next_wake_of(stream, &jobs, &format!("stream {}", index + 1)).await?;
    }
    Ok(())
}

async fn woken_by_each_queue<B: Backend>(h: Harness<B>) -> CaseResult {
    let (a, b, c) = (queue("a")?, queue("b")?, queue("c")?);
    let mut stream = h
        .backend
        .wakeups(&[a.clone(), b.clone()])
        .await
        .ctx("wakeups")?;
    h.backend.wake(&c).await.ctx("wake c")?;
    h.backend.wake(&b).await.ctx("wake b")?;
    next_wake_of(&mut stream, &b, "wake of b").await?;
    h.backend.wake(&c).await.ctx("wake c")?;
    h.backend.wake(&a).await.ctx("wake a")?;
    next_wake_of(&mut stream, &a, "wake of a").await?;
    Ok(())
}
