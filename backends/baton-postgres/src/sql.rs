//! Every SQL statement of the backend, with the table prefix applied once at connect.
//!
//! `{now}` is the server's clock in milliseconds (`now()`: the start of the statement's
//! transaction), `{cols}` the job columns under [`baton_sql::JobRow`]'s names, `{event}` a
//! `NOTIFY` of the returned job's state change tagged with the origin bound as `$ORIGIN`,
//! `{events}` the CTEs that send the state changes of all rows of the CTE `{changed}` as few
//! `NOTIFY`s (one per statement unless the payload nears PostgreSQL's 8000-byte limit), and
//! `{finish}` the history with its last attempt ended by the outcome object bound as `$OUTCOME`.

use baton_sql::TablePrefix;
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

const NOW: &str = "(extract(epoch from now()) * 1000)::bigint";
const COLS: &str = "id, queue, payload, priority, state, attempts, retry, created_at, run_at, \
     finished_at, result, error, lease_owner, lease_token, lease_expires_at, \
     history::text AS history, trace_parent";
const EVENT: &str = "pg_notify('{prefix}events', json_build_object('o', $ORIGIN::bigint, \
     'j', id, 'q', queue, 's', state, 'a', attempts)::text)::text AS notified";
/// The CTEs that send the events of every row of the CTE `{changed}` as few `NOTIFY`s: one
/// `{"o": origin, "e": [[id, queue, state, attempts], ...]}` per run of rows whose events fit
/// in [`EVENTS_CHUNK_BYTES`] (PostgreSQL refuses payloads of 8000 bytes or more; one event is
/// at most about 1,300 bytes, a 200-byte queue name fully escaped). A row's events keep the
/// order of the statements that changed it; within one statement each job appears once.
const EVENTS: &str = "events AS (
    SELECT json_build_array(id, queue, state, attempts)::text AS e,
        sum(octet_length(json_build_array(id, queue, state, attempts)::text))
            OVER (ORDER BY id) AS upto
    FROM {changed}
), notified AS (
    SELECT pg_notify('{prefix}events', '{\"o\":' || $ORIGIN::bigint || ',\"e\":['
        || string_agg(e, ',' ORDER BY upto) || ']}') AS sent
    FROM events GROUP BY (upto - 1) / {chunk}
)";
/// The most bytes of events in one notification (see [`EVENTS`]).
const EVENTS_CHUNK_BYTES: usize = 6000;
const FINISH: &str = "(history - (-1)) || jsonb_build_array((history -> -1) \
     || jsonb_build_object('finished_at', {now}) || $OUTCOME::jsonb)";

/// Reserve for several callers at once: pick due jobs in order under `SKIP LOCKED`, number
/// them, and give job `rn` to the caller of slot `rn` (owner `$2[rn]`, TTL `$3[rn]`).
///
/// The number of jobs is written into the statement (`{limit}`, see
/// [`Statements::reserve`]), not bound: with `LIMIT $n`, PostgreSQL's generic plan assumes a
/// tenth of the queue's pending jobs, so on a deep queue it keeps planning every execution
/// afresh (a tenth of the server's time with 1,000,000 pending jobs), and the generic plan
/// itself joins the update by a hash over the whole table.
///
/// The queue is matched under the "C" collation (the same equality), which only the partial
/// index `jobs_pending_walk` serves (`migrations/0002_reserve_walk_index.sql`): matched plainly,
/// a queue the statistics do not know yet is estimated at one row, and the planner prefers the
/// `(queue, state)` index and a sort of every pending job of the queue (11 ms instead of 1.4 ms
/// with 3,000 pending jobs). The events of the reserved jobs go out as in [`EVENTS`].
///
/// With 1,000,000 finished and 100,000 pending jobs in one queue, `EXPLAIN` of the picking
/// part shows the pending partial index walked in order and cut by the limit, with no sort
/// (checked by `tests/explain.rs`):
///
/// ```text
/// Limit  (cost=0.43..11.32 rows=32 width=26)
///   ->  LockRows  (cost=0.43..34477.14 rows=101263 width=26)
///         ->  Index Scan using t_e0_jobs_pending_walk on t_e0_jobs  (cost=0.43..33464.51 rows=101263 width=26)
///               Index Cond: (((queue)::text = 'q'::text) AND (run_at <= ((EXTRACT(epoch FROM now()) * '1000'::numeric))::bigint))
///               Filter: (state = 'pending'::text)
/// ```
const RESERVE_STEPS: &str = "picked AS (
    SELECT id, (row_number() OVER ())::int AS rn FROM (
        SELECT id FROM {prefix}jobs
        WHERE {queue_match} AND state = 'pending' AND run_at <= {now} AND {not_paused}
        ORDER BY priority DESC, run_at, id
        LIMIT {limit} FOR UPDATE SKIP LOCKED
    ) p
), reserved AS (
    UPDATE {prefix}jobs j SET state = 'running', attempts = j.attempts + 1,
        lease_owner = ($2::text[])[picked.rn], lease_token = j.lease_token + 1,
        lease_expires_at = {now} + ($3::bigint[])[picked.rn],
        history = j.history || jsonb_build_array(jsonb_build_object('number', j.attempts + 1,
            'owner', ($2::text[])[picked.rn], 'started_at', {now}, 'finished_at', NULL))
    FROM picked WHERE j.id = picked.id
    RETURNING j.*, picked.rn
)";
/// The reservation's guard for one queue (`$1`): none of its jobs while it is paused. The
/// subquery does not depend on the row, so it runs once per statement.
const NOT_PAUSED_ONE: &str = "NOT EXISTS (SELECT 1 FROM {prefix}paused_queues WHERE queue = $1)";
/// The reservation's guard for several queues: no job of a paused one.
const NOT_PAUSED_MANY: &str = "queue <> ALL (ARRAY(SELECT queue FROM {prefix}paused_queues))";
/// A reservation alone, its jobs' events sent as in [`EVENTS`].
const RESERVE: &str = "WITH {reserve_steps}, {events}
SELECT {cols}, rn, (SELECT count(*) FROM notified) AS notified FROM reserved";

/// Completes for several callers at once (the CTE `done`): each row is fenced by its own
/// lease; `$C_IDS`, `$C_OWNERS`, `$C_TOKENS` and `$C_RESULTS` are the arrays of the jobs'
/// ids, lease owners, lease tokens and results. The state is matched under the "C" collation
/// (the same equality) so that the rows are found by primary key: matched plainly, it lets the
/// planner walk the whole `jobs_running` index, which its statistics often think nearly empty.
const COMPLETE_STEPS: &str = "input AS (
    SELECT * FROM unnest($C_IDS::bigint[], $C_OWNERS::text[], $C_TOKENS::bigint[],
        $C_RESULTS::text[]) AS t(id, owner, token, result)
), done AS (
    UPDATE {prefix}jobs j SET state = 'succeeded', finished_at = {now},
        result = input.result, lease_owner = NULL, lease_expires_at = NULL,
        history = {finish}
    FROM input
    WHERE j.id = ANY($C_IDS::bigint[]) AND j.id = input.id
        AND (j.state COLLATE \"C\") = 'running'
        AND j.lease_owner = input.owner
        AND j.lease_token = input.token AND j.lease_expires_at > {now}
    RETURNING j.*
)";
/// A completion alone, its jobs' events sent as in [`EVENTS`].
const COMPLETE: &str = "WITH {complete_steps}, {events}
SELECT {cols}, (SELECT count(*) FROM notified) AS notified FROM done";

/// [`COMPLETE_STEPS`] and [`RESERVE_STEPS`] in one statement, so that one commit serves both:
/// completed rows come back with a NULL `rn`. The two touch different rows (a completion only
/// `running` ones, a reservation only `pending` ones), so neither can see the other's.
const COMPLETE_AND_RESERVE: &str = "WITH {complete_steps}, {reserve_steps}, changed AS (
    SELECT id, queue, state, attempts FROM done
    UNION ALL SELECT id, queue, state, attempts FROM reserved
), {events}
SELECT {cols}, NULL::int AS rn, (SELECT count(*) FROM notified) AS notified FROM done
UNION ALL SELECT {cols}, rn, (SELECT count(*) FROM notified) AS notified FROM reserved";

/// Every queue that holds a job or is paused, in byte order: `$1` the name to start after
/// (`''` for the first page: every name is longer), `$2` the most names.
///
/// The names of jobs come from a loose index scan: each step of the recursive CTE takes the
/// next name above the last one from the `(queue, …)` indexes, one descent per queue, however
/// many jobs each holds. Those indexes are in the column's collation, which need not be byte
/// order (an ICU or glibc database), so the walk visits every queue and only the outer query
/// compares and orders under "C", PostgreSQL's byte order, as `QueueName` sorts. A page thus
/// costs a descent per queue, never a scan of the jobs.
///
/// With 1,000,000 jobs in five queues and one paused queue, `EXPLAIN (ANALYZE, COSTS OFF)` of
/// the generic plan shows six index descents and no scan of the jobs, in 0.1 ms (checked by
/// `tests/explain.rs`; the jobs' heap is touched only for visibility):
///
/// ```text
/// Limit (actual time=0.064..0.065 rows=6 loops=1)
///   CTE walk
///     ->  Recursive Union (actual time=0.016..0.048 rows=6 loops=1)
///           ->  Limit (actual time=0.016..0.016 rows=1 loops=1)
///                 ->  Index Only Scan using t_jobs_queue_state on t_jobs (… rows=1 loops=1)
///           ->  WorkTable Scan on walk w (actual time=0.005..0.005 rows=1 loops=6)
///                 SubPlan 1
///                   ->  Limit (actual time=0.005..0.005 rows=1 loops=5)
///                         ->  Index Only Scan using t_jobs_queue_state on t_jobs j (… rows=1 loops=5)
///                               Index Cond: (queue > w.queue)
///   ->  Sort (actual time=0.063..0.064 rows=6 loops=1)
///         Sort Key: named.queue COLLATE "C"
///         ->  HashAggregate (actual time=0.055..0.056 rows=6 loops=1)
///               ->  Append (actual time=0.018..0.053 rows=6 loops=1)
///                     ->  CTE Scan on walk (actual time=0.017..0.050 rows=5 loops=1)
///                           Filter: ((queue IS NOT NULL) AND ((queue)::text > $1))
///                     ->  Seq Scan on t_paused_queues (actual time=0.002..0.002 rows=1 loops=1)
///                           Filter: ((queue)::text > $1)
/// Execution Time: 0.114 ms
/// ```
const QUEUES: &str = "WITH RECURSIVE walk(queue) AS (
    (SELECT queue FROM {prefix}jobs ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM {prefix}jobs j WHERE j.queue > w.queue ORDER BY j.queue LIMIT 1)
    FROM walk w WHERE w.queue IS NOT NULL
), named AS (
    SELECT queue FROM walk WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM {prefix}paused_queues
)
SELECT queue FROM named WHERE (queue COLLATE \"C\") > $1
ORDER BY queue COLLATE \"C\" LIMIT $2";

/// Every prepared statement.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) enqueue: SqlStr,
    /// [`RESERVE`] for one queue, `{limit}` still to fill in: see [`Statements::reserve`].
    reserve_one_queue: String,
    /// [`RESERVE`] for several queues, `{limit}` still to fill in.
    reserve_many_queues: String,
    /// [`COMPLETE_AND_RESERVE`] for one queue, `{limit}` still to fill in.
    complete_and_reserve_one_queue: String,
    /// [`COMPLETE_AND_RESERVE`] for several queues, `{limit}` still to fill in.
    complete_and_reserve_many_queues: String,
    pub(crate) touch: SqlStr,
    pub(crate) complete: SqlStr,
    pub(crate) select_current: SqlStr,
    pub(crate) end_attempt: SqlStr,
    pub(crate) select_for_update: SqlStr,
    pub(crate) job_states: SqlStr,
    pub(crate) cancel: SqlStr,
    pub(crate) retry: SqlStr,
    pub(crate) pause_queue: SqlStr,
    pub(crate) resume_queue: SqlStr,
    pub(crate) paused_queues: SqlStr,
    /// [`QUEUES`].
    pub(crate) queues: SqlStr,
    /// `Queue::list` by which filters it has: see [`Statements::list`].
    list: [SqlStr; 4],
    pub(crate) get: SqlStr,
    pub(crate) last: SqlStr,
    pub(crate) counts: SqlStr,
    pub(crate) select_expired: SqlStr,
    pub(crate) purge_cutoff: SqlStr,
    pub(crate) purge: SqlStr,
    pub(crate) notify_event: SqlStr,
    pub(crate) notify_wake: SqlStr,
    pub(crate) lock_insert: SqlStr,
    pub(crate) lock_select: SqlStr,
    pub(crate) lock_grant: SqlStr,
    pub(crate) lock_renew: SqlStr,
    pub(crate) lock_release: SqlStr,
    pub(crate) lock_holders: SqlStr,
    pub(crate) claim_add: SqlStr,
    pub(crate) claim_remove: SqlStr,
    pub(crate) claim_items: SqlStr,
    pub(crate) claim_take: SqlStr,
    pub(crate) claim_renew: SqlStr,
    pub(crate) claim_release: SqlStr,
    pub(crate) claim_release_all: SqlStr,
    pub(crate) claim_reap: SqlStr,
    pub(crate) beat: SqlStr,
    pub(crate) alive: SqlStr,
    pub(crate) last_beat: SqlStr,
    pub(crate) dead_owners: SqlStr,
    pub(crate) forget: SqlStr,
}

impl Statements {
    /// The reservation of `limit` jobs from one queue (`many_queues` false, `$1` a queue name)
    /// or several (`$1` an array of names); `$2` the owners and `$3` the TTLs in milliseconds
    /// per slot, `$4` this process's origin. Each limit is its own prepared statement, so that
    /// PostgreSQL plans it once, knowing how many rows it takes.
    pub(crate) fn reserve(&self, many_queues: bool, limit: usize) -> SqlStr {
        let template = if many_queues {
            &self.reserve_many_queues
        } else {
            &self.reserve_one_queue
        };
        with_limit(template, limit)
    }

    /// A reservation as in [`Self::reserve`] and a completion in one statement: `$5` to `$8`
    /// the completed jobs' ids, lease owners, lease tokens and results, `$9` the outcome.
    pub(crate) fn complete_and_reserve(&self, many_queues: bool, limit: usize) -> SqlStr {
        let template = if many_queues {
            &self.complete_and_reserve_many_queues
        } else {
            &self.complete_and_reserve_one_queue
        };
        with_limit(template, limit)
    }

    /// The list statement: `$1` the id bound, then the queue and the state when `queue` and
    /// `state` say they are filtered on, then the row limit.
    pub(crate) fn list(&self, queue: bool, state: bool) -> SqlStr {
        self.list[usize::from(queue) | usize::from(state) << 1].clone()
    }

    pub(crate) fn new(prefix: &TablePrefix) -> Self {
        let template = |text: &str, params: &[(&str, &str)]| -> String {
            let mut text = text
                .replace("{reserve_steps}", RESERVE_STEPS)
                .replace("{complete_steps}", COMPLETE_STEPS)
                .replace("{cols}", COLS)
                .replace("{events}", EVENTS)
                .replace("{chunk}", &EVENTS_CHUNK_BYTES.to_string())
                .replace("{event}", EVENT)
                .replace("{finish}", FINISH)
                .replace("{now}", NOW);
            for (placeholder, param) in params {
                text = text.replace(placeholder, param);
            }
            prefix.apply(&text)
        };
        let with = |text: &str, params: &[(&str, &str)]| -> SqlStr {
            AssertSqlSafe(template(text, params)).into_sql_str()
        };
        let sql = |text: &str| with(text, &[]);
        Self {
            enqueue: with("WITH ins AS (
                INSERT INTO {prefix}jobs (queue, payload, priority, state, retry, created_at, run_at,
                    trace_parent)
                SELECT q, p, pr, 'pending', r, {now}, {now} + d, tp
                FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[],
                    $6::text[])
                    WITH ORDINALITY AS t(q, p, pr, r, d, tp, n)
                ORDER BY n
                RETURNING id, queue, state, attempts, run_at, created_at
            ), {events}, woke AS (
                SELECT pg_notify('{prefix}wake', queue) AS sent
                FROM ins WHERE run_at <= created_at GROUP BY queue
            )
            SELECT id, (SELECT count(*) FROM notified) + (SELECT count(*) FROM woke) AS notified
            FROM ins", &[("{changed}", "ins"), ("$ORIGIN", "$7")]),
            reserve_one_queue: template(RESERVE, &[("{queue_match}", "(queue COLLATE \"C\") = $1"), ("{not_paused}", NOT_PAUSED_ONE), ("{changed}", "reserved"), ("$ORIGIN", "$4")]),
            reserve_many_queues: template(RESERVE, &[("{queue_match}", "(queue COLLATE \"C\") = ANY($1::text[])"), ("{not_paused}", NOT_PAUSED_MANY), ("{changed}", "reserved"), ("$ORIGIN", "$4")]),
            complete_and_reserve_one_queue: template(COMPLETE_AND_RESERVE, &[("{queue_match}", "(queue COLLATE \"C\") = $1"), ("{not_paused}", NOT_PAUSED_ONE), ("{changed}", "changed"), ("$ORIGIN", "$4"), ("$C_IDS", "$5"), ("$C_OWNERS", "$6"), ("$C_TOKENS", "$7"), ("$C_RESULTS", "$8"), ("$OUTCOME", "$9")]),
            complete_and_reserve_many_queues: template(COMPLETE_AND_RESERVE, &[("{queue_match}", "(queue COLLATE \"C\") = ANY($1::text[])"), ("{not_paused}", NOT_PAUSED_MANY), ("{changed}", "changed"), ("$ORIGIN", "$4"), ("$C_IDS", "$5"), ("$C_OWNERS", "$6"), ("$C_TOKENS", "$7"), ("$C_RESULTS", "$8"), ("$OUTCOME", "$9")]),
            touch: sql("UPDATE {prefix}jobs SET lease_expires_at = {now} + $4
                WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND lease_token = $3
                    AND lease_expires_at > {now}
                RETURNING lease_expires_at"),
            complete: with(COMPLETE, &[
                ("{changed}", "done"), ("$C_IDS", "$1"), ("$C_OWNERS", "$2"), ("$C_TOKENS", "$3"),
                ("$C_RESULTS", "$4"), ("$OUTCOME", "$5"), ("$ORIGIN", "$6"),
            ]),
            select_current: sql("SELECT {cols} FROM {prefix}jobs
                WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND lease_token = $3
                    AND lease_expires_at > {now}
                FOR UPDATE"),
            // $2: the retry delay in ms, or -1 to fail the job.
            end_attempt: with("WITH upd AS (
                UPDATE {prefix}jobs SET
                    state = CASE WHEN $2::bigint < 0 THEN 'failed' ELSE 'pending' END,
                    run_at = CASE WHEN $2::bigint < 0 THEN run_at ELSE {now} + $2::bigint END,
                    finished_at = CASE WHEN $2::bigint < 0 THEN {now} END,
                    error = $3, lease_owner = NULL, lease_expires_at = NULL, history = {finish}
                WHERE id = $1
                RETURNING *
            )
            SELECT {cols}, {event},
                CASE WHEN state = 'pending' AND run_at <= {now}
                    THEN pg_notify('{prefix}wake', queue)::text END AS woke
            FROM upd", &[("$OUTCOME", "$4"), ("$ORIGIN", "$5")]),
            select_for_update: sql("SELECT {cols} FROM {prefix}jobs WHERE id = $1 FOR UPDATE"),
            job_states: sql("SELECT id, queue, state, attempts FROM {prefix}jobs
                WHERE id = ANY($1)"),
            cancel: with("WITH upd AS (
                UPDATE {prefix}jobs SET state = 'canceled', finished_at = {now},
                    lease_owner = NULL, lease_expires_at = NULL,
                    history = CASE WHEN state = 'running' THEN {finish} ELSE history END
                WHERE id = $1
                RETURNING *
            )
            SELECT {cols}, {event} FROM upd", &[("$OUTCOME", "$2"), ("$ORIGIN", "$3")]),
            // A failed or canceled job (the caller checked, holding the row) due again now.
            retry: with("WITH upd AS (
                UPDATE {prefix}jobs SET state = 'pending', run_at = {now}, finished_at = NULL
                WHERE id = $1
                RETURNING *
            )
            SELECT {cols}, {event}, pg_notify('{prefix}wake', queue)::text AS woke
            FROM upd", &[("$ORIGIN", "$2")]),
            pause_queue: sql("INSERT INTO {prefix}paused_queues (queue, since) VALUES ($1, {now})
                ON CONFLICT (queue) DO NOTHING"),
            // Wakes the queue's workers in every process if it was paused.
            resume_queue: sql("WITH del AS (
                DELETE FROM {prefix}paused_queues WHERE queue = $1 RETURNING queue
            )
            SELECT pg_notify('{prefix}wake', queue)::text AS woke FROM del"),
            paused_queues: sql("SELECT queue FROM {prefix}paused_queues ORDER BY queue COLLATE \"C\""),
            queues: sql(QUEUES),
            list: [(false, false), (true, false), (false, true), (true, true)].map(|(queue, state)| {
                // Parameters in binding order: the id bound, the queue, the state, the limit.
                let mut conditions = String::new();
                let mut n = 1;
                for (filtered, column) in [(queue, "queue"), (state, "state")] {
                    if filtered {
                        n += 1;
                        conditions.push_str(&format!(" AND {column} = ${n}"));
                    }
                }
                sql(&format!("SELECT {{cols}} FROM {{prefix}}jobs WHERE id < $1{conditions}
                    ORDER BY id DESC LIMIT ${}", n + 1))
            }),
            get: sql("SELECT {cols} FROM {prefix}jobs WHERE id = $1"),
            last: sql("SELECT {cols} FROM {prefix}jobs WHERE queue = $1 ORDER BY id DESC LIMIT 1"),
            counts: sql(
                "SELECT state, count(*) AS n FROM {prefix}jobs WHERE queue = $1 GROUP BY state",
            ),
            select_expired: sql("SELECT {cols} FROM {prefix}jobs
                WHERE state = 'running' AND lease_expires_at <= {now}
                ORDER BY lease_expires_at, id
                LIMIT 1000 FOR UPDATE SKIP LOCKED"),
            purge_cutoff: sql("SELECT {now} - $1"),
            // A batch of the jobs that ended at or before the cutoff $1, at most $2 of them.
            purge: sql("DELETE FROM {prefix}jobs WHERE id IN (
                SELECT id FROM {prefix}jobs
                WHERE finished_at IS NOT NULL AND finished_at <= $1
                ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)"),
            notify_event: sql("SELECT pg_notify('{prefix}events', $1)::text"),
            notify_wake: sql("SELECT pg_notify('{prefix}wake', $1)::text"),
            lock_insert: sql("INSERT INTO {prefix}locks (name)
                SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING"),
            lock_select: sql("SELECT name, owner, token, expires_at, reason, since,
                    (owner IS NOT NULL AND expires_at > {now}) AS live, {now} AS now
                FROM {prefix}locks WHERE name = ANY($1)
                ORDER BY name COLLATE \"C\" FOR UPDATE"),
            lock_grant: sql("UPDATE {prefix}locks SET owner = $2, token = $3,
                    expires_at = {now} + $4, reason = $5, since = {now}, version = version + 1
                WHERE name = ANY($1)"),
            lock_renew: sql("UPDATE {prefix}locks SET expires_at = {now} + $4,
                    version = version + 1
                WHERE name = ANY($1) AND owner = $2 AND token = $3 AND expires_at > {now}
                RETURNING expires_at"),
            lock_release: sql("WITH old AS (
                SELECT name, expires_at > {now} AS live FROM {prefix}locks
                WHERE name = ANY($1) AND owner = $2 AND token = $3
                ORDER BY name COLLATE \"C\" FOR UPDATE
            )
            UPDATE {prefix}locks l SET owner = NULL, expires_at = NULL, version = l.version + 1
            FROM old WHERE l.name = old.name
            RETURNING old.live, pg_notify('{prefix}unlock', '')::text AS notified"),
            lock_holders: sql("SELECT name, owner, token, expires_at, reason, since
                FROM {prefix}locks WHERE owner IS NOT NULL AND expires_at > {now}
                ORDER BY name COLLATE \"C\""),
            claim_add: sql("INSERT INTO {prefix}claims AS c (pool, item, present, seq)
                SELECT $1, item, TRUE, nextval('{prefix}claims_seq')
                FROM unnest($2::text[]) WITH ORDINALITY AS t(item, n)
                ON CONFLICT (pool, item) DO UPDATE
                    SET present = TRUE, owner = NULL, expires_at = NULL, seq = EXCLUDED.seq
                    WHERE NOT c.present
                RETURNING item"),
            claim_remove: sql("UPDATE {prefix}claims
                SET present = FALSE, owner = NULL, expires_at = NULL, seq = NULL
                WHERE pool = $1 AND item = ANY($2) AND present"),
            claim_items: sql("SELECT item, owner, token, expires_at FROM {prefix}claims
                WHERE pool = $1 AND present ORDER BY item COLLATE \"C\""),
            claim_take: sql("WITH pick AS (
                SELECT item FROM {prefix}claims
                WHERE pool = $1 AND present AND (owner IS NULL OR expires_at <= {now})
                ORDER BY (owner IS NOT NULL), seq, expires_at, item COLLATE \"C\"
                LIMIT 1 FOR UPDATE SKIP LOCKED
            )
            UPDATE {prefix}claims c SET owner = $2, token = c.token + 1,
                expires_at = {now} + $3, seq = NULL
            FROM pick WHERE c.pool = $1 AND c.item = pick.item
            RETURNING c.item, c.token, c.expires_at"),
            claim_renew: sql("UPDATE {prefix}claims SET expires_at = {now} + $5
                WHERE pool = $1 AND item = $2 AND present AND owner = $3 AND token = $4
                    AND expires_at > {now}
                RETURNING expires_at"),
            claim_release: sql("UPDATE {prefix}claims
                SET owner = NULL, expires_at = NULL, seq = nextval('{prefix}claims_seq')
                WHERE pool = $1 AND item = $2 AND present AND owner = $3 AND token = $4
                    AND expires_at > {now}"),
            claim_release_all: sql("UPDATE {prefix}claims
                SET owner = NULL, expires_at = NULL, seq = nextval('{prefix}claims_seq')
                WHERE pool = $1 AND present AND owner = $2"),
            claim_reap: sql("UPDATE {prefix}claims c
                SET owner = NULL, expires_at = NULL, seq = nextval('{prefix}claims_seq')
                WHERE pool = $1 AND present AND owner IS NOT NULL
                    AND (expires_at <= {now} OR EXISTS (
                        SELECT 1 FROM {prefix}heartbeats h
                        WHERE h.owner = c.owner AND h.expires_at <= {now}))
                RETURNING item"),
            beat: sql("INSERT INTO {prefix}heartbeats (owner, expires_at, beat_at)
                VALUES ($1, {now} + $2, {now})
                ON CONFLICT (owner) DO UPDATE
                SET expires_at = EXCLUDED.expires_at, beat_at = EXCLUDED.beat_at"),
            alive: sql("SELECT EXISTS (SELECT 1 FROM {prefix}heartbeats
                WHERE owner = $1 AND expires_at > {now}) AS alive"),
            last_beat: sql("SELECT beat_at, expires_at, expires_at > {now} AS alive
                FROM {prefix}heartbeats WHERE owner = $1"),
            dead_owners: sql("SELECT owner FROM {prefix}heartbeats WHERE expires_at <= {now}"),
            forget: sql("DELETE FROM {prefix}heartbeats WHERE owner = $1"),
        }
    }
}

/// A statement template with its `{limit}` filled in.
fn with_limit(template: &str, limit: usize) -> SqlStr {
    AssertSqlSafe(template.replace("{limit}", &limit.to_string())).into_sql_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_writes_its_limit_into_the_statement_and_binds_four_parameters() {
        let sql = Statements::new(&TablePrefix::new("t_").unwrap());
        for many_queues in [false, true] {
            let text = sql.reserve(many_queues, 7);
            let text = text.as_str();
            assert!(text.contains("LIMIT 7 FOR UPDATE SKIP LOCKED"), "{text}");
            assert!(!text.contains("{limit}"), "{text}");
            assert!(text.contains("$4") && !text.contains("$5"), "{text}");
        }
    }

    #[test]
    fn every_placeholder_of_a_combined_statement_is_filled_and_it_binds_nine_parameters() {
        let sql = Statements::new(&TablePrefix::new("t_").unwrap());
        for many_queues in [false, true] {
            let text = sql.complete_and_reserve(many_queues, 7);
            let text = text.as_str();
            assert!(text.contains("LIMIT 7 FOR UPDATE SKIP LOCKED"), "{text}");
            for placeholder in [
                "{limit}",
                "{prefix}",
                "{now}",
                "{cols}",
                "{changed}",
                "{queue_match}",
                "{not_paused}",
                "_steps}",
            ] {
                assert!(!text.contains(placeholder), "{placeholder} in {text}");
            }
            assert!(!text.contains("$C_"), "{text}");
            assert!(
                !text.contains("$ORIGIN") && !text.contains("$OUTCOME"),
                "{text}"
            );
            assert!(text.contains("$9") && !text.contains("$10"), "{text}");
        }
    }
}
