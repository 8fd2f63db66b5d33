//! Cases for bad input: refused with `InvalidInput` before anything changes.

use std::time::Duration;

use baton_core::{
    Backend, Claim, ItemId, JobState, Lock, LockName, LockRequest, MAX_BATCH, MAX_ERROR_BYTES,
    MAX_ITEMS, MAX_LOCK_NAMES, MAX_NAME_LEN, MAX_PAYLOAD_BYTES, MAX_REASON_LEN, MAX_RESERVE,
    MAX_TTL, NewJob, Owner, PoolName, QueueName, Retry, RetryPolicy,
};
use serde_json::{Value, json};

use super::claims::claim_some;
use super::locks::{acquire, request};
use super::support::{
    Context, LONG_TTL, ensure, expect_invalid, items, job, lock, locks, owner, pool, queue,
    reserve_one,
};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "invalid names are refused with invalid input",
            invalid_names
        ),
        case!(
            "an oversized payload or an invalid retry policy is refused when a job is built",
            invalid_new_job
        ),
        case!(
            "a result larger than the payload limit is refused and the job keeps running",
            oversized_result
        ),
        case!(
            "reserve with max 0, more than the maximum or no queues is invalid input",
            invalid_reserve
        ),
        case!(
            "a heartbeat with a zero or too long ttl is invalid input",
            invalid_beat_ttl
        ),
        case!(
            "a claim or claim renewal with a zero or too long ttl is invalid input and changes nothing",
            invalid_claim_ttl
        ),
        case!(
            "a lock request or renewal with a zero or too long ttl is invalid input",
            invalid_lock_ttl
        ),
        case!(
            "a reserve or touch with a zero or too long ttl is invalid input and changes nothing",
            invalid_job_ttl
        ),
        case!(
            "an empty or oversized lock request or an overlong reason is invalid input",
            invalid_lock_request
        ),
        case!(
            "an oversized enqueue_batch is invalid input and stores nothing",
            oversized_batch
        ),
        case!(
            "wakeups over no queues is invalid input",
            wakeups_without_queues
        ),
        case!(
            "adding or removing more items than allowed in one call is invalid input and changes nothing",
            oversized_item_lists
        ),
        case!(
            "an overlong failure message is cut and the job is still retried",
            overlong_failure_message
        ),
        case!(
            "names and reasons that look like sql are stored and matched as plain text",
            names_that_look_like_sql
        ),
    ]
}

/// TTLs every method taking one must refuse.
fn bad_ttls() -> [Duration; 4] {
    [
        Duration::ZERO,
        Duration::from_micros(500),
        MAX_TTL + Duration::from_secs(1),
        Duration::MAX,
    ]
}

async fn invalid_names<B: Backend>(_h: Harness<B>) -> CaseResult {
    let too_long = "n".repeat(MAX_NAME_LEN + 1);
    let bad = [
        "",
        " leading",
        "trailing ",
        "new\nline",
        "nul\0",
        "tab\t",
        too_long.as_str(),
    ];
    for name in bad {
        expect_invalid(QueueName::new(name), &format!("queue name {name:?}"))?;
        expect_invalid(LockName::new(name), &format!("lock name {name:?}"))?;
        expect_invalid(PoolName::new(name), &format!("pool name {name:?}"))?;
        expect_invalid(ItemId::new(name), &format!("item id {name:?}"))?;
        expect_invalid(Owner::new(name), &format!("owner {name:?}"))?;
        let quoted = serde_json::to_string(name).ctx("quote")?;
        ensure!(
            serde_json::from_str::<QueueName>(&quoted).is_err(),
            "the queue name {name:?} was accepted from JSON"
        );
    }
    let longest = "n".repeat(MAX_NAME_LEN);
    QueueName::new(&longest).ctx("a name of the longest allowed length")?;
    Ok(())
}

async fn invalid_new_job<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let oversized = Value::String("x".repeat(MAX_PAYLOAD_BYTES));
    expect_invalid(NewJob::new(jobs.clone(), oversized), "an oversized payload")?;
    let policies = [
        RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        },
        RetryPolicy {
            jitter: 2.0,
            ..RetryPolicy::default()
        },
        RetryPolicy {
            base: f64::NAN,
            ..RetryPolicy::default()
        },
    ];
    for policy in policies {
        expect_invalid(
            job(&jobs, json!({}))?.with_retry(policy),
            &format!("retry policy {policy:?}"),
        )?;
    }
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(counts.total() == 0, "refused jobs were stored: {counts:?}");
    Ok(())
}

async fn oversized_result<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    h.backend
        .enqueue(&job(&jobs, json!({}))?)
        .await
        .ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    let oversized = Value::String("x".repeat(MAX_PAYLOAD_BYTES));
    expect_invalid(
        h.backend.complete(&reserved.lease, oversized).await,
        "complete with an oversized result",
    )?;
    let stored = h
        .backend
        .get(reserved.job.id)
        .await
        .ctx("get")?
        .ctx("job")?;
    ensure!(
        stored.state == JobState::Running && stored.result.is_none(),
        "a refused result changed the job: {stored:?}"
    );
    h.backend
        .complete(&reserved.lease, json!("small"))
        .await
        .ctx("complete with a small result after the refusal")?;
    Ok(())
}

async fn invalid_reserve<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    h.backend
        .enqueue(&job(&jobs, json!({}))?)
        .await
        .ctx("enqueue")?;
    let one = std::slice::from_ref(&jobs);
    expect_invalid(
        h.backend.reserve(one, &worker, LONG_TTL, 0).await,
        "reserve max 0",
    )?;
    expect_invalid(
        h.backend
            .reserve(one, &worker, LONG_TTL, MAX_RESERVE + 1)
            .await,
        "reserve more than the maximum",
    )?;
    expect_invalid(
        h.backend.reserve(&[], &worker, LONG_TTL, 1).await,
        "reserve from no queues",
    )?;
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.pending == 1 && counts.running == 0,
        "a refused reserve took a job: {counts:?}"
    );
    let all = h
        .backend
        .reserve(one, &worker, LONG_TTL, MAX_RESERVE)
        .await
        .ctx("reserve the maximum")?;
    ensure!(
        all.len() == 1,
        "reserve of up to the maximum got {} jobs",
        all.len()
    );
    Ok(())
}

async fn invalid_beat_ttl<B: Backend>(h: Harness<B>) -> CaseResult {
    let worker = owner("worker")?;
    for ttl in bad_ttls() {
        expect_invalid(
            h.backend.beat(&worker, ttl).await,
            &format!("beat with ttl {ttl:?}"),
        )?;
    }
    ensure!(
        !h.backend.alive(&worker).await.ctx("alive")?,
        "a refused beat made the owner alive"
    );
    h.backend
        .beat(&worker, MAX_TTL)
        .await
        .ctx("beat with the longest ttl")?;
    Ok(())
}

async fn invalid_claim_ttl<B: Claim>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let worker = owner("worker")?;
    h.backend
        .add(&accounts, &items(&["a", "b"])?)
        .await
        .ctx("add")?;
    for ttl in bad_ttls() {
        expect_invalid(
            h.backend.claim(&accounts, &worker, ttl).await,
            &format!("claim with ttl {ttl:?}"),
        )?;
    }
    let listed = h.backend.items(&accounts).await.ctx("items")?;
    ensure!(
        listed.iter().all(|status| status.holder.is_none()),
        "a refused claim took an item: {listed:?}"
    );
    let held = claim_some(&h.backend, &accounts, &worker, LONG_TTL).await?;
    for ttl in bad_ttls() {
        expect_invalid(
            h.backend.renew_claim(&held, ttl).await,
            &format!("renew a claim with ttl {ttl:?}"),
        )?;
    }
    h.backend
        .renew_claim(&held, LONG_TTL)
        .await
        .ctx("renew after refused renewals")?;
    Ok(())
}

async fn invalid_lock_ttl<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    for ttl in bad_ttls() {
        expect_invalid(
            LockRequest::new(locks(&["a"])?, holder.clone(), ttl),
            &format!("lock request with ttl {ttl:?}"),
        )?;
    }
    let lease = acquire(&h.backend, &["a"], &holder, LONG_TTL).await?;
    for ttl in bad_ttls() {
        expect_invalid(
            h.backend.renew_lock(&lease, ttl).await,
            &format!("renew a lock with ttl {ttl:?}"),
        )?;
    }
    h.backend
        .renew_lock(&lease, LONG_TTL)
        .await
        .ctx("renew after refused renewals")?;
    Ok(())
}

async fn invalid_job_ttl<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let worker = owner("worker")?;
    h.backend
        .enqueue(&job(&jobs, json!({}))?)
        .await
        .ctx("enqueue")?;
    for ttl in bad_ttls() {
        expect_invalid(
            h.backend
                .reserve(std::slice::from_ref(&jobs), &worker, ttl, 1)
                .await,
            &format!("reserve with ttl {ttl:?}"),
        )?;
    }
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.pending == 1,
        "a refused reserve took the job: {counts:?}"
    );
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        reserved.job.attempts == 1,
        "refused reserves counted attempts: {}",
        reserved.job.attempts
    );
    for ttl in bad_ttls() {
        expect_invalid(
            h.backend.touch(&reserved.lease, ttl).await,
            &format!("touch with ttl {ttl:?}"),
        )?;
    }
    h.backend
        .touch(&reserved.lease, LONG_TTL)
        .await
        .ctx("touch after refused touches")?;
    Ok(())
}

async fn invalid_lock_request<B: Lock>(h: Harness<B>) -> CaseResult {
    let holder = owner("holder")?;
    expect_invalid(
        LockRequest::new(Vec::new(), holder.clone(), LONG_TTL),
        "an empty lock request",
    )?;
    let many: Vec<LockName> = (0..=MAX_LOCK_NAMES)
        .map(|i| lock(&format!("lock-{i}")))
        .collect::<Result<_, _>>()?;
    expect_invalid(
        LockRequest::new(many.clone(), holder.clone(), LONG_TTL),
        "a lock request over too many names",
    )?;
    let base = request(&["a"], &holder, LONG_TTL)?;
    expect_invalid(
        base.clone().with_reason("r".repeat(MAX_REASON_LEN + 1)),
        "an overlong reason",
    )?;
    expect_invalid(
        base.clone().with_reason("bell\u{7}"),
        "a reason with control characters",
    )?;
    base.with_reason("line one\nline two\twith a tab")
        .ctx("a reason with newlines and tabs")?;
    let most = LockRequest::new(many[..MAX_LOCK_NAMES].to_vec(), holder.clone(), LONG_TTL)
        .ctx("a request over the most names allowed")?;
    let granted = h
        .backend
        .acquire(&most)
        .await
        .ctx("acquire the most names allowed")?;
    ensure!(
        granted.granted().is_some(),
        "a request of {MAX_LOCK_NAMES} free names was busy"
    );
    Ok(())
}

async fn oversized_batch<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let one = job(&jobs, Value::Null)?;
    let batch = vec![one; MAX_BATCH + 1];
    expect_invalid(
        h.backend.enqueue_batch(&batch).await,
        "a batch over the maximum",
    )?;
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(
        counts.total() == 0,
        "a refused batch stored jobs: {counts:?}"
    );
    Ok(())
}

async fn wakeups_without_queues<B: Backend>(h: Harness<B>) -> CaseResult {
    match h.backend.wakeups(&[]).await {
        Err(baton_core::Error::InvalidInput(_)) => Ok(()),
        Err(other) => Err(format!(
            "wakeups over no queues: expected InvalidInput, got {other:?}"
        )),
        Ok(_) => Err("wakeups over no queues: expected InvalidInput, got a stream".to_owned()),
    }
}

async fn oversized_item_lists<B: Backend>(h: Harness<B>) -> CaseResult {
    let accounts = pool("accounts")?;
    let too_many: Vec<ItemId> = (0..=MAX_ITEMS)
        .map(|n| ItemId::new(format!("item-{n}")).ctx("item id"))
        .collect::<Result<_, _>>()?;
    expect_invalid(
        h.backend.add(&accounts, &too_many).await,
        "adding more items than allowed",
    )?;
    ensure!(
        h.backend.items(&accounts).await.ctx("items")?.is_empty(),
        "a refused add stored items"
    );
    let allowed = &too_many[..MAX_ITEMS];
    let added = h.backend.add(&accounts, allowed).await.ctx("add")?;
    ensure!(added == MAX_ITEMS as u64, "added {added} of {MAX_ITEMS}");
    expect_invalid(
        h.backend.remove(&accounts, &too_many).await,
        "removing more items than allowed",
    )?;
    let left = h.backend.items(&accounts).await.ctx("items")?.len();
    ensure!(
        left == MAX_ITEMS,
        "a refused remove removed items: {left} left"
    );
    Ok(())
}

async fn overlong_failure_message<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    let retried = job(&jobs, Value::Null)?
        .with_retry(RetryPolicy::exponential(2, Duration::from_millis(1)))
        .ctx("retry policy")?;
    let id = h.backend.enqueue(&retried).await.ctx("enqueue")?;
    let reserved = reserve_one(&h.backend, &jobs, &owner("worker")?, LONG_TTL).await?;
    let message = "é".repeat(MAX_ERROR_BYTES);
    let failed = h
        .backend
        .fail(&reserved.lease, &message, Retry::After(Duration::ZERO))
        .await
        .ctx("fail with an overlong message")?;
    ensure!(
        failed.state == JobState::Pending,
        "the job was not retried: {:?}",
        failed.state
    );
    let kept = failed.error.clone().ctx("the failure's error")?;
    ensure!(
        kept.len() <= MAX_ERROR_BYTES + '…'.len_utf8() && kept.starts_with("éé"),
        "the message was kept at {} bytes",
        kept.len()
    );
    let stored = h.backend.get(id).await.ctx("get")?.ctx("job")?;
    ensure!(
        stored.error == Some(kept),
        "the stored error differs from the returned one"
    );
    Ok(())
}

async fn names_that_look_like_sql<B: Backend>(h: Harness<B>) -> CaseResult {
    let evil = "x'; DROP TABLE jobs; --";
    let jobs = queue(evil)?;
    let id = h
        .backend
        .enqueue(&job(&jobs, json!({ "q": evil }))?)
        .await
        .ctx("enqueue")?;
    let worker = owner(evil)?;
    let reserved = reserve_one(&h.backend, &jobs, &worker, LONG_TTL).await?;
    ensure!(
        reserved.job.id == id && reserved.job.queue.as_str() == evil,
        "reserved {:?} from queue {:?}",
        reserved.job.id,
        reserved.job.queue
    );
    h.backend
        .complete(&reserved.lease, json!(evil))
        .await
        .ctx("complete")?;
    let counts = h.backend.counts(&jobs).await.ctx("counts")?;
    ensure!(counts.succeeded == 1, "counts {counts:?}");

    let name = lock(evil)?;
    let request = LockRequest::new([name.clone()], worker.clone(), LONG_TTL)
        .ctx("lock request")?
        .with_reason(evil)
        .ctx("reason")?;
    let lease = h
        .backend
        .acquire(&request)
        .await
        .ctx("acquire")?
        .granted()
        .ctx("granted lock")?;
    let holders = h.backend.holders().await.ctx("holders")?;
    ensure!(
        holders.len() == 1 && holders[0].name == name && holders[0].reason == evil,
        "holders {holders:?}"
    );
    h.backend.release_lock(&lease).await.ctx("release lock")?;

    let accounts = pool(evil)?;
    let item = ItemId::new(evil).ctx("item id")?;
    let added = h
        .backend
        .add(&accounts, std::slice::from_ref(&item))
        .await
        .ctx("add")?;
    ensure!(added == 1, "added {added}");
    let claim = h
        .backend
        .claim(&accounts, &worker, LONG_TTL)
        .await
        .ctx("claim")?
        .ctx("claimed item")?;
    ensure!(claim.item == item, "claimed {:?}", claim.item);
    h.backend.release_claim(&claim).await.ctx("release claim")?;
    let items = h.backend.items(&accounts).await.ctx("items")?;
    ensure!(items.len() == 1, "items {items:?}");
    ensure!(
        h.backend.get(id).await.ctx("get")?.is_some(),
        "the job is gone"
    );
    Ok(())
}
