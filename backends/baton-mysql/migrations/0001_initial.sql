-- Baton's tables on MySQL 8 / MariaDB 10.6+. Every name column is utf8mb4_bin, so names that
-- differ only in case stay different and comparisons are exact. Times are BIGINT milliseconds
-- since the Unix epoch read from the server's clock. Every statement is idempotent: DDL commits
-- on its own in MySQL, so a half-applied file must be safe to apply again.

CREATE TABLE IF NOT EXISTS {prefix}jobs (
    id BIGINT NOT NULL AUTO_INCREMENT,
    queue VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload LONGTEXT NOT NULL,
    priority INT NOT NULL,
    state VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    retry LONGTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    finished_at BIGINT NULL,
    result LONGTEXT NULL,
    error LONGTEXT NULL,
    lease_owner VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT NULL,
    history LONGTEXT NOT NULL,
    PRIMARY KEY (id),
    -- Reservation: state leads (no partial indexes in MySQL), then the order of due jobs.
    INDEX due (state, queue, priority DESC, run_at, id),
    -- requeue_expired: running jobs by lease expiry.
    INDEX expiry (state, lease_expires_at),
    -- purge_finished.
    INDEX finished (finished_at),
    -- last and counts.
    INDEX by_queue (queue, id),
    INDEX queue_state (queue, state)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}locks (
    name VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    owner VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    token BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NULL,
    reason TEXT NOT NULL,
    since BIGINT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name),
    INDEX held (owner, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}claims (
    pool VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    item VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    present TINYINT NOT NULL DEFAULT 1,
    owner VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    token BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (pool, item),
    INDEX unclaimed (pool, seq),
    INDEX expiry (pool, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}counters (
    name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT IGNORE INTO {prefix}counters (name, value) VALUES ('claim_seq', 0);

CREATE TABLE IF NOT EXISTS {prefix}heartbeats (
    owner VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (owner),
    INDEX expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}events (
    seq BIGINT NOT NULL AUTO_INCREMENT,
    origin VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    job_id BIGINT NOT NULL,
    queue VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    state VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    attempts INT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (seq),
    INDEX created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
