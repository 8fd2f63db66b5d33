-- Baton on PostgreSQL: jobs, locks, claims and heartbeats. `{prefix}` is replaced by the
-- configured table prefix; times are BIGINT milliseconds since the epoch by the server's clock.

CREATE TABLE IF NOT EXISTS {prefix}jobs (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INT NOT NULL,
    state TEXT NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    retry TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    finished_at BIGINT,
    result TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    history JSONB NOT NULL DEFAULT '[]'
);

-- Reservation walks this index in order and stops after `max` rows: finished jobs are not in it.
CREATE INDEX IF NOT EXISTS {prefix}jobs_pending
    ON {prefix}jobs (queue, priority DESC, run_at, id) WHERE state = 'pending';
-- requeue_expired: running jobs by lease expiry.
CREATE INDEX IF NOT EXISTS {prefix}jobs_running
    ON {prefix}jobs (lease_expires_at) WHERE state = 'running';
-- purge_finished: terminal jobs by when they ended.
CREATE INDEX IF NOT EXISTS {prefix}jobs_finished
    ON {prefix}jobs (finished_at) WHERE finished_at IS NOT NULL;
-- last: the newest job of a queue.
CREATE INDEX IF NOT EXISTS {prefix}jobs_queue_id ON {prefix}jobs (queue, id);
-- counts: jobs of a queue by state.
CREATE INDEX IF NOT EXISTS {prefix}jobs_queue_state ON {prefix}jobs (queue, state);

CREATE TABLE IF NOT EXISTS {prefix}locks (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    reason TEXT NOT NULL DEFAULT '',
    since BIGINT,
    version BIGINT NOT NULL DEFAULT 0
);

CREATE SEQUENCE IF NOT EXISTS {prefix}claims_seq;

CREATE TABLE IF NOT EXISTS {prefix}claims (
    pool TEXT NOT NULL,
    item TEXT NOT NULL,
    -- false: a tombstone of a removed item, kept so that its tokens keep increasing.
    present BOOLEAN NOT NULL DEFAULT TRUE,
    owner TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    -- FIFO order of unclaimed items; NULL while claimed or removed.
    seq BIGINT,
    PRIMARY KEY (pool, item)
);

CREATE INDEX IF NOT EXISTS {prefix}claims_unclaimed
    ON {prefix}claims (pool, seq) WHERE present AND owner IS NULL;
CREATE INDEX IF NOT EXISTS {prefix}claims_claimed
    ON {prefix}claims (pool, expires_at) WHERE present AND owner IS NOT NULL;

CREATE TABLE IF NOT EXISTS {prefix}heartbeats (
    owner TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
