-- Baton's tables on SQLite. `{prefix}` is replaced by the configured table prefix.
-- Times are INTEGER milliseconds since the Unix epoch from SQLite's clock; JSON is TEXT.

-- Jobs. AUTOINCREMENT so that the id of a purged job is never handed out again.
CREATE TABLE IF NOT EXISTS {prefix}jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    retry            TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    finished_at      INTEGER,
    result           TEXT,
    error            TEXT,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    history          TEXT    NOT NULL DEFAULT '[]'
);

-- Reservation: pending jobs only, in the order `reserve` takes them. Finished jobs are not in
-- this index at all, so a million of them cost reservation nothing.
CREATE INDEX IF NOT EXISTS {prefix}jobs_due
    ON {prefix}jobs (queue, priority DESC, run_at, id) WHERE state = 'pending';
-- `requeue_expired`: running jobs by lease expiry.
CREATE INDEX IF NOT EXISTS {prefix}jobs_running
    ON {prefix}jobs (lease_expires_at) WHERE state = 'running';
-- `purge_finished`: terminal jobs by when they ended.
CREATE INDEX IF NOT EXISTS {prefix}jobs_finished
    ON {prefix}jobs (finished_at) WHERE finished_at IS NOT NULL;
-- `last` and `counts`.
CREATE INDEX IF NOT EXISTS {prefix}jobs_queue_state ON {prefix}jobs (queue, state);

-- Locks: one row per name ever locked; owner NULL when free. `token` is the last token granted
-- (kept when the lock is freed), `version` grows on every change.
CREATE TABLE IF NOT EXISTS {prefix}locks (
    name       TEXT    PRIMARY KEY,
    owner      TEXT,
    token      INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,
    reason     TEXT    NOT NULL DEFAULT '',
    since      INTEGER,
    version    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {prefix}locks_held ON {prefix}locks (name) WHERE owner IS NOT NULL;

-- Claim pools: one row per item ever added. A removed item stays as a tombstone
-- (present = 0) so that its tokens keep increasing if it is added again. `seq` orders
-- unclaimed items oldest first.
CREATE TABLE IF NOT EXISTS {prefix}claims (
    pool       TEXT    NOT NULL,
    item       TEXT    NOT NULL,
    present    INTEGER NOT NULL DEFAULT 1,
    owner      TEXT,
    token      INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,
    seq        INTEGER,
    PRIMARY KEY (pool, item)
);
CREATE INDEX IF NOT EXISTS {prefix}claims_seq ON {prefix}claims (pool, seq);
CREATE INDEX IF NOT EXISTS {prefix}claims_held
    ON {prefix}claims (pool, expires_at) WHERE owner IS NOT NULL;

-- Heartbeats: each owner's last beat's expiry.
CREATE TABLE IF NOT EXISTS {prefix}heartbeats (
    owner      TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

-- Job events for other processes (see baton_sql::EventPoller); pruned after a while.
CREATE TABLE IF NOT EXISTS {prefix}events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    origin     TEXT    NOT NULL,
    job_id     INTEGER NOT NULL,
    queue      TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {prefix}events_created ON {prefix}events (created_at);
