-- Queues whose jobs are not reserved until they are resumed, and since when (milliseconds since
-- the epoch, by the database's clock).
CREATE TABLE IF NOT EXISTS {prefix}paused_queues (
    queue TEXT NOT NULL PRIMARY KEY,
    since INTEGER NOT NULL
);
