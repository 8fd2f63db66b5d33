-- Records a failed attempt and retries or fails the job; returns {'ok', job} or {'lost'}.
-- ARGV: J, origin, events channel, wake channel, id, owner, token, error, mode, after ms,
-- jitter sample.
local J, origin = ARGV[1], ARGV[2]
local id, owner, token, message = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local mode, after, sample = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local now = now_ms()
local jk = job_key(J, id)
local v = redis.call('HMGET', jk, 'st', 'ow', 'tk', 'ex', 'q', 'at', 'rt', 'pr')
if v[1] ~= 'running' or v[2] ~= owner or v[3] ~= token or tonumber(v[4]) <= now then
  return {'lost'}
end
local queue, attempts = v[5], tonumber(v[6])
local qk = queue_key(J, queue)
redis.call('HSET', jk, 'err', message, 'ae', now, 'ao', 'failed')
redis.call('ZREM', J .. 'running', id)
local delay = retry_delay(v[7], attempts, mode, after, sample)
if delay == nil then
  finish(J, qk, id, 'running', 'failed', now)
  event(id, queue, 'failed', attempts)
else
  local run_at = now + delay
  redis.call('HSET', jk, 'st', 'pending', 'ra', run_at)
  count_move(qk, 'running', 'pending')
  if schedule(J, qk, tonumber(id), tonumber(v[8]), run_at, now) then woken[queue] = true end
  event(id, queue, 'pending', attempts)
end
flush(ARGV[3], ARGV[4], origin)
return {'ok', job_view(J, id)}
