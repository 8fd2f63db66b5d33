-- The W3C traceparent of the span that enqueued each job, so that the span running it can be
-- its child. NULL for a job enqueued without one, and for every row written before this column
-- existed.
ALTER TABLE {prefix}jobs ADD COLUMN trace_parent TEXT;
