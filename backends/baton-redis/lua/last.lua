-- The most recently enqueued job of a queue that still exists, or nil.
-- ARGV: J, origin, events channel, wake channel, queue.
local J = ARGV[1]
local ids = redis.call('ZREVRANGE', queue_key(J, ARGV[5]) .. ':ids', 0, 0)
if #ids == 0 then return false end
return job_view(J, ids[1])
