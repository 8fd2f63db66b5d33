-- Upkeep of a queue table. Every reserved or finished job leaves a dead row version behind,
-- and its old entry in the pending index stays there, ahead of every pending job, until vacuum
-- removes it: reservation walks over them all. PostgreSQL's default waits for dead rows to
-- reach 20% of the table (400,000 dead rows beside 2,000,000 jobs) before it vacuums; this
-- table asks for a vacuum once they are 1% of it or 10,000 rows, whichever is more, and for a
-- vacuum of pages that only saw inserts as often, so that their visibility is known.
ALTER TABLE {prefix}jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_vacuum_insert_threshold = 10000
);

-- Reservation walks `jobs_pending_walk` (migration 2); this twin under the default collation
-- served nothing else, and cost an entry per pending row.
DROP INDEX IF EXISTS {prefix}jobs_pending;
