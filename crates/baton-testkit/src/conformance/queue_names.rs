//! Cases for listing the queues by name, a page at a time.

use baton_core::{Backend, MAX_QUEUE_LIST, QueueName};
use serde_json::json;

use super::support::{Context, LONG_TTL, ensure, expect_invalid, job, owner, queue, reserve_one};
use super::{Case, CaseResult, Harness, case};

pub(super) fn cases<B: Backend + Clone + 'static>() -> Vec<Case<B>> {
    vec![
        case!(
            "queues lists every queue holding a job in any state or paused, once each, in byte \
             order, a page at a time",
            queues_in_byte_order
        ),
        case!(
            "a queue list limit of 0 or above the maximum is refused",
            queues_limits
        ),
    ]
}

/// The names of `queues`, for messages and comparisons.
fn names(queues: &[QueueName]) -> Vec<&str> {
    queues.iter().map(QueueName::as_str).collect()
}

async fn queues_in_byte_order<B: Backend>(h: Harness<B>) -> CaseResult {
    // Byte order differs from most locales' order: upper case before lower case, a space and
    // punctuation before letters, and non-ASCII after ASCII.
    for (name, jobs) in [
        ("b", 2),
        ("a", 1),
        ("c-é", 1),
        ("B", 1),
        ("a b", 1),
        ("a-b", 1),
        ("ab", 1),
        ("é", 1),
    ] {
        let name = queue(name)?;
        for n in 0..jobs {
            h.backend
                .enqueue(&job(&name, json!(n))?)
                .await
                .ctx("enqueue")?;
        }
    }
    // A queue whose only job succeeded.
    let done = queue("done")?;
    h.backend
        .enqueue(&job(&done, json!("once"))?)
        .await
        .ctx("enqueue")?;
    let worker = owner("worker")?;
    let reserved = reserve_one(&h.backend, &done, &worker, LONG_TTL).await?;
    h.backend
        .complete(&reserved.lease, json!("ok"))
        .await
        .ctx("complete")?;
    // A paused queue without jobs, and a paused queue with jobs (listed once).
    h.backend.pause(&queue("p")?).await.ctx("pause")?;
    h.backend.pause(&queue("a")?).await.ctx("pause")?;

    let mut expected: Vec<QueueName> = ["b", "a", "c-é", "B", "a b", "a-b", "ab", "é", "done", "p"]
        .into_iter()
        .map(queue)
        .collect::<Result<_, _>>()?;
    expected.sort();
    ensure!(
        names(&expected) == ["B", "a", "a b", "a-b", "ab", "b", "c-é", "done", "p", "é"],
        "byte order of the expected names: {:?}",
        names(&expected)
    );

    let all = h.backend.queues(None, MAX_QUEUE_LIST).await.ctx("queues")?;
    ensure!(
        all == expected,
        "queues(None, {MAX_QUEUE_LIST}) returned {:?}, expected {:?}",
        names(&all),
        names(&expected)
    );

    // Pages of two, each starting after the last name of the one before.
    let mut paged: Vec<QueueName> = Vec::new();
    for _ in 0..=expected.len() {
        let page = h.backend.queues(paged.last(), 2).await.ctx("queues page")?;
        ensure!(page.len() <= 2, "a page of 2 held {:?}", names(&page));
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    ensure!(
        paged == expected,
        "paging by 2 returned {:?}, expected {:?}",
        names(&paged),
        names(&expected)
    );

    let page = h
        .backend
        .queues(Some(&expected[2]), 3)
        .await
        .ctx("queues")?;
    ensure!(
        page == expected[3..6],
        "3 queues after {:?}: {:?}, expected {:?}",
        expected[2],
        names(&page),
        names(&expected[3..6])
    );
    // A name that is no queue starts a page just as well.
    let page = h
        .backend
        .queues(Some(&queue("aa")?), 2)
        .await
        .ctx("queues")?;
    ensure!(
        names(&page) == ["ab", "b"],
        "2 queues after \"aa\": {:?}",
        names(&page)
    );
    let page = h
        .backend
        .queues(Some(&queue("zzz")?), 10)
        .await
        .ctx("queues")?;
    ensure!(
        names(&page) == ["é"],
        "queues after \"zzz\": {:?}",
        names(&page)
    );
    let last = expected.last().ctx("last expected queue")?;
    let page = h
        .backend
        .queues(Some(last), MAX_QUEUE_LIST)
        .await
        .ctx("queues")?;
    ensure!(
        page.is_empty(),
        "queues after the last one: {:?}",
        names(&page)
    );
    Ok(())
}

async fn queues_limits<B: Backend>(h: Harness<B>) -> CaseResult {
    let jobs = queue("jobs")?;
    h.backend
        .enqueue(&job(&jobs, json!(1))?)
        .await
        .ctx("enqueue")?;
    for limit in [0, MAX_QUEUE_LIST + 1] {
        expect_invalid(
            h.backend.queues(None, limit).await,
            &format!("queues with limit {limit}"),
        )?;
        expect_invalid(
            h.backend.queues(Some(&jobs), limit).await,
            &format!("queues after {jobs:?} with limit {limit}"),
        )?;
    }
    let one = h.backend.queues(None, 1).await.ctx("queues")?;
    ensure!(one == [jobs], "queues with limit 1: {:?}", names(&one));
    Ok(())
}
