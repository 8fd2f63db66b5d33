//! Cases for fencing: tokens grow per resource, and a lease that is not current never works.

use baton_core::{
    Backend, Claim, FencingToken, JobLease, JobState, Lease, Lock, Queue, QueueName, Reserved,
    Retry,
};
use serde_json::json;

use super::claims::claim_some;
use super::locks::acquire;
use super::support::{
    Context, LONG_TTL, PAST_SHORT_TTL, SHORT_TTL, ensure, expect_lease_lost, immediate_retries,
    items, job_with_retry, owner, pool, queue, reserve_one,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "job tokens strictly increase with each reservation of the job",
            job_tokens_increase
        ),
        case!(
            "lock tokens strictly increase with each grant of a name",
            lock_tokens_increase
        ),
        case!(
            "a multi-name lock grant outranks every earlier token of each of its names",
            multi_name_tokens
        ),
        case!(
            "claim tokens strictly increase per item, even after the item is removed and added again",
            claim_tokens_increase
        ),
        case!("a stale token cannot complete a job", stale_complete),
        case!("a stale token cannot fail a job", stale_fail),
        case!("a stale token cannot touch a job", stale_touch),
        case!(
            "an expired job lease is refused even when no one took over",
            expired_job_lease
        ),
        case!("a forged job token is refused", forged_job_token),
        case!(
            "a finished job's lease cannot complete or fail it again",
            finished_job_lease
        ),
        case!(
            "a stale lock lease cannot renew or release, and the new holder keeps the lock",
            stale_lock
        ),
        case!(
            "an expired lock lease is refused even when no one took over",
            expired_lock
        ),
        case!("a released lock lease cannot be renewed", released_lock),
        case!(
            "a stale claim cannot renew or release, and the new holder keeps the item",
            stale_claim
        ),
        case!(
            "an expired or released claim is refused even when no one took over",
            expired_claim
        ),
    ]
}

/// A job reserved by a worker that then died, its lease expired and requeued, and reserved
/// again by a live worker: returns the queue, the dead worker's and the live worker's hold.
async fn job_taken_over<B: Queue>(
    h: &Harness<B>,
) -> Result<(QueueName, Reserved, Reserved), String> {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(
            &jobs,
            json!({"n": 1}),
            immediate_retries(3),
        )?)
        .await
        .ctx("enqueue")?;
    let old = reserve_one(&h.backend, &jobs, &owner("dead-worker")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        requeued == vec![id],
        "requeue_expired returned {requeued:?}, expected [{id}]"
    );
    let new = reserve_one(&h.backend, &jobs, &owner("live-worker")?, LONG_TTL).await?;
    ensure!(
        new.job.id == id,
        "reserved job {} instead of {id}",
        new.job.id
    );
    ensure!(
        new.lease.lease.token() > old.lease.lease.token(),
        "second reservation token {} not above the first {}",
        new.lease.lease.token(),
        old.lease.lease.token()
    );
    Ok((jobs, old, new))
}

async fn job_tokens_increase<B: Queue>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(5))?)
        .await
        .ctx("enqueue")?;
    let worker = owner("worker")?;
    let mut tokens: Vec<FencingToken> = Vec::new();
    for attempt in 1..=3 {
        let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
        ensure!(
            reserved.job.id == id,
            "reserved {} instead of {id}",
            reserved.job.id
        );
        ensure!(
            reserved.lease.job == id,
            "lease names job {}",
            reserved.lease.job
        );
        ensure!(
            reserved.job.attempts == attempt,
            "attempt {attempt} reserved with attempts {}",
            reserved.job.attempts
        );
        tokens.push(reserved.lease.lease.token());
        h.backend
            .fail(
                &reserved.lease,
                "try again",
                Retry::After(std::time::Duration::ZERO),
            )
            .await
            .ctx("fail")?;
    }
    let reserved = reserve_one(&h.backend, &jobs, &owner("short-lived")?, SHORT_TTL).await?;
    tokens.push(reserved.lease.lease.token());
    h.time.pass(PAST_SHORT_TTL).await;
    h.backend.requeue_expired().await.ctx("requeue_expired")?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    tokens.push(reserved.lease.lease.token());
    ensure!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "job tokens over five reservations: {tokens:?}"
    );
    Ok(())
}

async fn lock_tokens_increase<B: Lock>(h: Harness<B>) -> CaseResult {
    let first = owner("first")?;
    let second = owner("second")?;
    let mut tokens = Vec::new();
    for holder in [&first, &second, &first] {
        let lease = acquire(&h.backend, &["master"], holder, LONG_TTL).await?;
        tokens.push(lease.lease.token());
        h.backend.release_lock(&lease).await.ctx("release")?;
    }
    let expiring = acquire(&h.backend, &["master"], &first, SHORT_TTL).await?;
    tokens.push(expiring.lease.token());
    h.time.pass(PAST_SHORT_TTL).await;
    let lease = acquire(&h.backend, &["master"], &second, LONG_TTL).await?;
    tokens.push(lease.lease.token());
    ensure!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "lock tokens over five grants: {tokens:?}"
    );
    Ok(())
}

async fn multi_name_tokens<B: Lock>(h: Harness<B>) -> CaseResult {
    let who = owner("holder")?;
    let mut earlier = Vec::new();
    for _ in 0..3 {
        let lease = acquire(&h.backend, &["a"], &who, LONG_TTL).await?;
        earlier.push(lease.lease.token());
        h.backend.release_lock(&lease).await.ctx("release")?;
    }
    let lease = acquire(&h.backend, &["b"], &who, LONG_TTL).await?;
    earlier.push(lease.lease.token());
    h.backend.release_lock(&lease).await.ctx("release")?;
    let lease = acquire(&h.backend, &["c"], &who, LONG_TTL).await?;
    earlier.push(lease.lease.token());
    h.backend.release_lock(&lease).await.ctx("release")?;

    let both = acquire(&h.backend, &["b", "a", "c"], &who, LONG_TTL).await?;
    let max_earlier = earlier.iter().max().copied().ctx("earlier tokens")?;
    ensure!(
        both.lease.token() > max_earlier,
        "grant of a, b and c has token {}, not above every earlier token {earlier:?}",
        both.lease.token()
    );
    h.backend.release_lock(&both).await.ctx("release")?;
    for name in ["b", "c"] {
        let single = acquire(&h.backend, &[name], &who, LONG_TTL).await?;
        ensure!(
            single.lease.token() > both.lease.token(),
            "later grant of {name} has token {}, not above the multi-name grant's {}",
            single.lease.token(),
            both.lease.token()
        );
        h.backend.release_lock(&single).await.ctx("release")?;
    }
    Ok(())
}

async fn claim_tokens_increase<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let only = items(&["only"])?;
    let who = owner("w")?;
    h.backend.add(&accounts, &only).await.ctx("add")?;
    let mut tokens = Vec::new();
    let held = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    tokens.push(held.lease.token());
    h.backend.release_claim(&held).await.ctx("release")?;
    let held = claim_some(&h.backend, &accounts, &owner("other")?, SHORT_TTL).await?;
    tokens.push(held.lease.token());
    h.time.pass(PAST_SHORT_TTL).await;
    let held = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    tokens.push(held.lease.token());
    let removed = h.backend.remove(&accounts, &only).await.ctx("remove")?;
    ensure!(removed == 1, "remove returned {removed}");
    h.backend.add(&accounts, &only).await.ctx("add again")?;
    let held = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    tokens.push(held.lease.token());
    ensure!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "claim tokens over four grants (the last after remove and add): {tokens:?}"
    );
    Ok(())
}

async fn stale_complete<B: Queue>(h: Harness<B>) -> CaseResult {
    let (_, old, new) = job_taken_over(&h).await?;
    expect_lease_lost(
        h.backend.complete(&old.lease, json!("stale")).await,
        "complete with the stale lease",
    )?;
    let job = h.backend.get(new.job.id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.state == JobState::Running,
        "job is {} after a stale complete",
        job.state
    );
    ensure!(
        job.lease.as_ref() == Some(&new.lease.lease),
        "job lease is {:?}, expected the live worker's",
        job.lease
    );
    let done = h
        .backend
        .complete(&new.lease, json!("fresh"))
        .await
        .ctx("complete")?;
    ensure!(
        done.state == JobState::Succeeded,
        "complete left the job {}",
        done.state
    );
    ensure!(
        done.result == Some(json!("fresh")),
        "result is {:?}",
        done.result
    );
    Ok(())
}

async fn stale_fail<B: Queue>(h: Harness<B>) -> CaseResult {
    let (_, old, new) = job_taken_over(&h).await?;
    for retry in [Retry::Never, Retry::ByPolicy] {
        expect_lease_lost(
            h.backend.fail(&old.lease, "stale failure", retry).await,
            &format!("fail with the stale lease ({retry:?})"),
        )?;
    }
    let job = h.backend.get(new.job.id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.state == JobState::Running,
        "job is {} after a stale fail",
        job.state
    );
    ensure!(
        job.attempts == 2,
        "job has {} attempts after a stale fail",
        job.attempts
    );
    h.backend
        .touch(&new.lease, LONG_TTL)
        .await
        .ctx("touch by the live worker")?;
    Ok(())
}

async fn stale_touch<B: Queue>(h: Harness<B>) -> CaseResult {
    let (_, old, new) = job_taken_over(&h).await?;
    expect_lease_lost(
        h.backend.touch(&old.lease, LONG_TTL).await,
        "touch with the stale lease",
    )?;
    let job = h.backend.get(new.job.id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.lease.as_ref() == Some(&new.lease.lease),
        "a stale touch changed the lease to {:?}",
        job.lease
    );
    Ok(())
}

async fn expired_job_lease<B: Queue>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let id = h
        .backend
        .enqueue(&job_with_retry(&jobs, json!({}), immediate_retries(3))?)
        .await
        .ctx("enqueue")?;
    let held = reserve_one(&h.backend, &jobs, &owner("slow-worker")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    expect_lease_lost(
        h.backend.touch(&held.lease, LONG_TTL).await,
        "touch an expired lease",
    )?;
    expect_lease_lost(
        h.backend.complete(&held.lease, json!("late")).await,
        "complete with an expired lease",
    )?;
    expect_lease_lost(
        h.backend.fail(&held.lease, "late", Retry::Never).await,
        "fail with an expired lease",
    )?;
    let job = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        !job.state.is_terminal() && job.result.is_none(),
        "refused calls on an expired lease left the job {} with result {:?}",
        job.state,
        job.result
    );
    let requeued = h.backend.requeue_expired().await.ctx("requeue_expired")?;
    ensure!(
        requeued == vec![id],
        "requeue_expired returned {requeued:?}"
    );
    Ok(())
}

async fn forged_job_token<B: Queue>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    for n in 0..2 {
        h.backend
            .enqueue(&job_with_retry(
                &jobs,
                json!({"n": n}),
                immediate_retries(3),
            )?)
            .await
            .ctx("enqueue")?;
    }
    let worker = owner("worker")?;
    let first = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let second = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    let real = &first.lease.lease;
    let forge = |token: u64| JobLease {
        job: first.job.id,
        lease: Lease::granted(
            real.owner().clone(),
            FencingToken::new(token),
            real.expires_at(),
        ),
    };
    let mut forged = vec![
        forge(real.token().get() + 1),
        forge(real.token().get() + 1000),
    ];
    if real.token().get() > 0 {
        forged.push(forge(real.token().get() - 1));
    }
    for lease in &forged {
        expect_lease_lost(
            h.backend.complete(lease, json!("forged")).await,
            &format!("complete with forged token {}", lease.lease.token()),
        )?;
        expect_lease_lost(
            h.backend.touch(lease, LONG_TTL).await,
            &format!("touch with forged token {}", lease.lease.token()),
        )?;
    }
    h.backend
        .complete(&first.lease, json!("real"))
        .await
        .ctx("complete with the real lease")?;
    h.backend
        .complete(&second.lease, json!("real"))
        .await
        .ctx("complete the other job")?;
    Ok(())
}

async fn finished_job_lease<B: Queue>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    for n in 0..2 {
        h.backend
            .enqueue(&job_with_retry(
                &jobs,
                json!({"n": n}),
                immediate_retries(3),
            )?)
            .await
            .ctx("enqueue")?;
    }
    let worker = owner("worker")?;
    let done = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .complete(&done.lease, json!(1))
        .await
        .ctx("complete")?;
    expect_lease_lost(
        h.backend.complete(&done.lease, json!(2)).await,
        "complete twice",
    )?;
    expect_lease_lost(
        h.backend
            .fail(&done.lease, "after success", Retry::ByPolicy)
            .await,
        "fail after complete",
    )?;
    expect_lease_lost(
        h.backend.touch(&done.lease, LONG_TTL).await,
        "touch after complete",
    )?;
    let failed = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    h.backend
        .fail(&failed.lease, "broken", Retry::Never)
        .await
        .ctx("fail")?;
    expect_lease_lost(
        h.backend.complete(&failed.lease, json!(3)).await,
        "complete after fail",
    )?;
    expect_lease_lost(
        h.backend.fail(&failed.lease, "again", Retry::Never).await,
        "fail twice",
    )?;
    let job = h.backend.get(done.job.id).await.ctx("get")?.ctx("job")?;
    ensure!(
        job.state == JobState::Succeeded && job.result == Some(json!(1)) && job.history.len() == 1,
        "a refused second complete changed the job: {job:?}"
    );
    Ok(())
}

async fn stale_lock<B: Lock>(h: Harness<B>) -> CaseResult {
    let first = owner("first")?;
    let second = owner("second")?;
    let old = acquire(&h.backend, &["x", "y"], &first, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let new = acquire(&h.backend, &["y"], &second, LONG_TTL).await?;
    expect_lease_lost(
        h.backend.renew_lock(&old, LONG_TTL).await,
        "renew a stale lock lease",
    )?;
    expect_lease_lost(
        h.backend.release_lock(&old).await,
        "release a stale lock lease",
    )?;
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(
        holders.len() == 1 && holders[0].lease == new.lease,
        "after a stale renew and release, holders are {holders:?}; expected only the new grant"
    );
    h.backend
        .renew_lock(&new, LONG_TTL)
        .await
        .ctx("renew by the new holder")?;
    h.backend
        .release_lock(&new)
        .await
        .ctx("release by the new holder")?;
    Ok(())
}

async fn expired_lock<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let lease = acquire(&h.backend, &["x"], &holder, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    expect_lease_lost(
        h.backend.renew_lock(&lease, LONG_TTL).await,
        "renew an expired lock",
    )?;
    expect_lease_lost(
        h.backend.release_lock(&lease).await,
        "release an expired lock",
    )?;
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(holders.is_empty(), "an expired lock is listed: {holders:?}");
    Ok(())
}

async fn released_lock<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    let lease = acquire(&h.backend, &["x", "y"], &holder, LONG_TTL).await?;
    h.backend.release_lock(&lease).await.ctx("release")?;
    expect_lease_lost(
        h.backend.renew_lock(&lease, LONG_TTL).await,
        "renew a released lock",
    )?;
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(
        holders.is_empty(),
        "renewing a released lock took it back: {holders:?}"
    );
    Ok(())
}

async fn stale_claim<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    h.backend
        .add(&accounts, &items(&["only"])?)
        .await
        .ctx("add")?;
    let old = claim_some(&h.backend, &accounts, &owner("first")?, SHORT_TTL).await?;
    h.time.pass(PAST_SHORT_TTL).await;
    let new = claim_some(&h.backend, &accounts, &owner("second")?, LONG_TTL).await?;
    expect_lease_lost(
        h.backend.renew_claim(&old, LONG_TTL).await,
        "renew a stale claim",
    )?;
    expect_lease_lost(h.backend.release_claim(&old).await, "release a stale claim")?;
    let listed = h.backend.items(&accounts).await.ctx("items")?;
    ensure!(
        listed.len() == 1 && listed[0].holder.as_ref() == Some(&new.lease),
        "after a stale renew and release the item is {listed:?}; expected the new holder"
    );
    h.backend
        .renew_claim(&new, LONG_TTL)
        .await
        .ctx("renew by the new holder")?;
    Ok(())
}

async fn expired_claim<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    h.backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    let who = owner("holder")?;
    let expiring = claim_some(&h.backend, &accounts, &who, SHORT_TTL).await?;
    let released = claim_some(&h.backend, &accounts, &who, LONG_TTL).await?;
    h.backend.release_claim(&released).await.ctx("release")?;
    expect_lease_lost(
        h.backend.renew_claim(&released, LONG_TTL).await,
        "renew a released claim",
    )?;
    expect_lease_lost(
        h.backend.release_claim(&released).await,
        "release a released claim",
    )?;
    h.time.pass(PAST_SHORT_TTL).await;
    expect_lease_lost(
        h.backend.renew_claim(&expiring, LONG_TTL).await,
        "renew an expired claim",
    )?;
    expect_lease_lost(
        h.backend.release_claim(&expiring).await,
        "release an expired claim",
    )?;
    Ok(())
}
