-- Queues whose jobs are not reserved until they are resumed, and since when (milliseconds since
-- the epoch, by the database's clock).
CREATE TABLE IF NOT EXISTS {prefix}paused_queues (
    queue VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    since BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
