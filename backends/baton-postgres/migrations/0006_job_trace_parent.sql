-- The W3C traceparent of the span that enqueued each job, so that the span running it can be
-- its child. NULL for a job enqueued without one, and for every row written before this column
-- existed. Adding a nullable column without a default rewrites no rows.
ALTER TABLE {prefix}jobs ADD COLUMN IF NOT EXISTS trace_parent TEXT;
