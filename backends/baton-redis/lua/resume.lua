-- Resumes a paused queue and wakes its workers; returns 1 if it was paused, else 0.
-- ARGV: J, origin, events channel, wake channel, queue.
local removed = redis.call('SREM', ARGV[1] .. 'paused', ARGV[5])
if removed == 1 then woken[ARGV[5]] = true end
flush(ARGV[3], ARGV[4], ARGV[2])
return removed
