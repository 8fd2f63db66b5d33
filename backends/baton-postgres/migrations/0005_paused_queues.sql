-- Queues whose jobs are not reserved until they are resumed, and since when (milliseconds since
-- the epoch, by the database's clock).
CREATE TABLE IF NOT EXISTS {prefix}paused_queues (
    queue TEXT PRIMARY KEY,
    since BIGINT NOT NULL
);
