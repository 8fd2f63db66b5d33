-- When the server received each owner's last beat, by its clock, in milliseconds since the
-- epoch. NULL for a row written before this column existed, until that owner beats again.
ALTER TABLE {prefix}heartbeats ADD COLUMN IF NOT EXISTS beat_at BIGINT;
