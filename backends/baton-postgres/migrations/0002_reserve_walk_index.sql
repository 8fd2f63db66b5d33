-- Reservation matches the queue under the "C" collation, which only this index serves, so that
-- it walks the queue's pending jobs in order whatever the statistics say. Matched by plain
-- equality, a queue that the statistics do not know yet (a new or fast-filling queue) is
-- estimated at one row, and the planner prefers `(queue, state)` and a sort of every pending
-- job of the queue, on every reservation.
CREATE INDEX IF NOT EXISTS {prefix}jobs_pending_walk
    ON {prefix}jobs ((queue COLLATE "C"), priority DESC, run_at, id) WHERE state = 'pending';
