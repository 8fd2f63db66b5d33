//! Reservation stays an index walk when finished jobs pile up: with 1,000,000 finished and
//! 100,000 pending jobs, the plan of the picking query walks the pending partial index, and so
//! does the generic plan the backend's connections keep for its prepared statements. Listing
//! the queues of 1,000,000 jobs descends an index once per queue and never scans the jobs.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use baton_core::{Owner, Queue, QueueName};
use sqlx::{PgConnection, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserving_among_a_million_finished_jobs_walks_the_pending_index() -> anyhow::Result<()> {
    let (backend, prefix) = support::fresh_prefixed("e").await;
    let pool = backend.pool();
    let sql = |text: &str| support::prefixed(&prefix, text);
    sqlx::query(sql(
        "INSERT INTO {prefix}jobs (queue, payload, priority, state, attempts, retry, created_at,
             run_at, finished_at)
         SELECT 'q', '{}', 0, 'succeeded', 1, '{}', g, g, g FROM generate_series(1, 1000000) g",
    ))
    .execute(pool)
    .await?;
    sqlx::query(sql(
        "INSERT INTO {prefix}jobs (queue, payload, priority, state, retry, created_at, run_at)
         SELECT 'q', '{}', g % 3, 'pending', '{}', g, g FROM generate_series(1, 100000) g",
    ))
    .execute(pool)
    .await?;
    sqlx::query(sql("ANALYZE {prefix}jobs"))
        .execute(pool)
        .await?;

    let plan: Vec<String> = sqlx::query(sql("EXPLAIN SELECT id FROM {prefix}jobs
         WHERE (queue COLLATE \"C\") = 'q' AND state = 'pending'
             AND run_at <= (extract(epoch from now()) * 1000)::bigint
         ORDER BY priority DESC, run_at, id
         LIMIT 32 FOR UPDATE SKIP LOCKED"))
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| row.get::<String, _>(0))
    .collect();
    let plan = plan.join("\n");
    println!("{plan}");
    assert!(
        plan.contains(&format!("Index Scan using {prefix}jobs_pending_walk")),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");

    // The backend's connections keep generic plans: the queue's name is not known when planning.
    let mut connection = pool.acquire().await?;
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *connection)
        .await?;
    assert_eq!(mode, "force_generic_plan");
    sqlx::raw_sql(sql("PREPARE pick(text) AS SELECT id FROM {prefix}jobs
         WHERE (queue COLLATE \"C\") = $1 AND state = 'pending'
             AND run_at <= (extract(epoch from now()) * 1000)::bigint
         ORDER BY priority DESC, run_at, id
         LIMIT 32 FOR UPDATE SKIP LOCKED;
         PREPARE running(bigint[]) AS SELECT id FROM {prefix}jobs
         WHERE id = ANY($1) AND (state COLLATE \"C\") = 'running'"))
    .execute(&mut *connection)
    .await?;
    let generic = plan_of(&mut connection, "EXPLAIN EXECUTE pick('q')").await?;
    assert!(
        generic.contains(&format!("Index Scan using {prefix}jobs_pending_walk")),
        "{generic}"
    );
    assert!(generic.contains("= $1"), "not a generic plan: {generic}");
    assert!(
        !generic.contains("Seq Scan") && !generic.contains("Sort"),
        "{generic}"
    );
    let generic = plan_of(&mut connection, "EXPLAIN EXECUTE running('{1,2,3}')").await?;
    assert!(
        generic.contains(&format!("Index Scan using {prefix}jobs_pkey")),
        "{generic}"
    );
    sqlx::raw_sql("DEALLOCATE pick; DEALLOCATE running")
        .execute(&mut *connection)
        .await?;
    drop(connection);

    let queue = QueueName::new("q")?;
    let started = Instant::now();
    let reserved = backend
        .reserve(&[queue], &Owner::new("w")?, Duration::from_secs(30), 32)
        .await?;
    println!("reserved {} in {:?}", reserved.len(), started.elapsed());
    assert_eq!(reserved.len(), 32);
    assert!(reserved.iter().all(|r| r.job.priority.0 == 2));

    support::drop_tables(pool, &prefix).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_the_queues_of_a_million_jobs_skips_from_queue_to_queue() -> anyhow::Result<()> {
    let (backend, prefix) = support::fresh_prefixed("e").await;
    let pool = backend.pool();
    let sql = |text: &str| support::prefixed(&prefix, text);
    sqlx::query(sql(
        "INSERT INTO {prefix}jobs (queue, payload, priority, state, attempts, retry, created_at,
             run_at, finished_at)
         SELECT (ARRAY['b', 'a', 'c-é', 'Z', 'q'])[1 + g % 5], '{}', 0,
             CASE WHEN g % 3 = 0 THEN 'pending' ELSE 'succeeded' END, 1, '{}', g, g,
             CASE WHEN g % 3 = 0 THEN NULL ELSE g END
         FROM generate_series(1, 1000000) g",
    ))
    .execute(pool)
    .await?;
    sqlx::query(sql("ANALYZE {prefix}jobs"))
        .execute(pool)
        .await?;
    backend.pause(&QueueName::new("p")?).await?;

    let started = Instant::now();
    let all = backend.queues(None, 1000).await?;
    println!("listed {} queues in {:?}", all.len(), started.elapsed());
    let names: Vec<&str> = all.iter().map(QueueName::as_str).collect();
    assert_eq!(names, ["Z", "a", "b", "c-é", "p", "q"]);
    let page = backend.queues(Some(&QueueName::new("a")?), 2).await?;
    let names: Vec<&str> = page.iter().map(QueueName::as_str).collect();
    assert_eq!(names, ["b", "c-é"]);

    // The statement of `Queue::queues`, under the generic plan the backend's connections keep.
    let mut connection = pool.acquire().await?;
    sqlx::raw_sql(sql("PREPARE queues(text, bigint) AS
         WITH RECURSIVE walk(queue) AS (
             (SELECT queue FROM {prefix}jobs ORDER BY queue LIMIT 1)
             UNION ALL
             SELECT (SELECT j.queue FROM {prefix}jobs j WHERE j.queue > w.queue
                 ORDER BY j.queue LIMIT 1)
             FROM walk w WHERE w.queue IS NOT NULL
         ), named AS (
             SELECT queue FROM walk WHERE queue IS NOT NULL
             UNION
             SELECT queue FROM {prefix}paused_queues
         )
         SELECT queue FROM named WHERE (queue COLLATE \"C\") > $1
         ORDER BY queue COLLATE \"C\" LIMIT $2"))
    .execute(&mut *connection)
    .await?;
    let plan = plan_of(
        &mut connection,
        "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE queues('', 1000)",
    )
    .await?;
    assert!(plan.contains("Recursive Union"), "{plan}");
    assert!(
        plan.contains(&format!("Index Only Scan using {prefix}jobs_queue")),
        "{plan}"
    );
    assert!(plan.contains("Index Cond: (queue > w.queue)"), "{plan}");
    assert!(
        !plan.contains(&format!("Seq Scan on {prefix}jobs")),
        "{plan}"
    );
    sqlx::raw_sql("DEALLOCATE queues")
        .execute(&mut *connection)
        .await?;
    drop(connection);

    support::drop_tables(pool, &prefix).await;
    Ok(())
}

/// The plan an `EXPLAIN` statement prints, one line per plan line (printed too, for the log).
async fn plan_of(connection: &mut PgConnection, explain: &'static str) -> anyhow::Result<String> {
    let plan = sqlx::query(explain)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{plan}");
    Ok(plan)
}
