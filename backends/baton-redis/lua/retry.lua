-- Runs a failed or canceled job again, due now; returns {'ok', job, 1 if it changed else 0},
-- {'notfound'} or {'conflict', state}.
-- ARGV: J, origin, events channel, wake channel, id.
local J, origin = ARGV[1], ARGV[2]
local id = ARGV[5]
local now = now_ms()
local jk = job_key(J, id)
local v = redis.call('HMGET', jk, 'st', 'q', 'pr', 'at')
local state, queue = v[1], v[2]
if not state then return {'notfound'} end
if state == 'pending' or state == 'running' then return {'ok', job_view(J, id), 0} end
if state == 'succeeded' then return {'conflict', state} end
local qk = queue_key(J, queue)
redis.call('ZREM', J .. 'finished', id)
redis.call('HSET', jk, 'st', 'pending', 'ra', now)
redis.call('HDEL', jk, 'fa')
count_move(qk, state, 'pending')
if schedule(J, qk, tonumber(id), tonumber(v[3]), now, now) then woken[queue] = true end
event(id, queue, 'pending', v[4])
flush(ARGV[3], ARGV[4], origin)
return {'ok', job_view(J, id), 1}
