-- Cancels a job; returns {'ok', job, 1 if it changed else 0}, {'notfound'} or
-- {'conflict', state}.
-- ARGV: J, origin, events channel, wake channel, id.
local J, origin = ARGV[1], ARGV[2]
local id = ARGV[5]
local now = now_ms()
local jk = job_key(J, id)
local v = redis.call('HMGET', jk, 'st', 'q', 'pr', 'ra', 'at')
local state, queue = v[1], v[2]
if not state then return {'notfound'} end
if state == 'canceled' then return {'ok', job_view(J, id), 0} end
if state == 'succeeded' or state == 'failed' then return {'conflict', state} end
local qk = queue_key(J, queue)
if state == 'pending' then
  redis.call('ZREM', qk .. ':due', due_member(tonumber(v[4]), tonumber(id)))
  redis.call('ZREM', qk .. ':sched', id)
else
  end_attempt(J, id, now, 'canceled')
  redis.call('ZREM', J .. 'running', id)
end
finish(J, qk, id, state, 'canceled', now)
event(id, queue, 'canceled', v[5])
flush(ARGV[3], ARGV[4], origin)
return {'ok', job_view(J, id), 1}
