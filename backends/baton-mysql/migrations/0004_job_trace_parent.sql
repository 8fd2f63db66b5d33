-- The W3C traceparent of the span that enqueued each job, so that the span running it can be
-- its child: always 55 ASCII characters. NULL for a job enqueued without one, and for every row
-- written before this column existed.
ALTER TABLE {prefix}jobs ADD COLUMN trace_parent VARCHAR(55) CHARACTER SET ascii COLLATE ascii_bin NULL;
