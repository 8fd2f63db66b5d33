-- When the database received each owner's last beat, by its clock, in milliseconds since the
-- epoch. NULL for a row written before this column existed, until that owner beats again.
ALTER TABLE {prefix}heartbeats ADD COLUMN beat_at INTEGER;
