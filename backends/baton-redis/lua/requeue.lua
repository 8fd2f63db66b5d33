-- Ends up to `chunk` attempts whose lease expired and retries or fails their jobs by policy;
-- returns {looked at, {id, queue, new state, attempts}...}.
-- ARGV: J, origin, events channel, wake channel, chunk, jitter sample.
local J, origin = ARGV[1], ARGV[2]
local chunk, sample = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', J .. 'running', '-inf', now, 'LIMIT', 0, chunk)
local out = {}
for i, id in ipairs(ids) do
  redis.call('ZREM', J .. 'running', id)
  local jk = job_key(J, id)
  local v = redis.call('HMGET', jk, 'st', 'q', 'at', 'rt', 'pr', 'ex')
  if v[1] == 'running' and tonumber(v[6]) <= now then
    local queue, attempts = v[2], tonumber(v[3])
    local qk = queue_key(J, queue)
    redis.call('HSET', jk, 'err', 'lease expired', 'ae', now, 'ao', 'expired')
    -- A golden-ratio sequence spreads one random sample over the jobs of this call.
    local s = (sample + i * 0.6180339887) % 1
    local delay = retry_delay(v[4], attempts, 'policy', 0, s)
    if delay == nil then
      finish(J, qk, id, 'running', 'failed', now)
      event(id, queue, 'failed', attempts)
      out[#out + 1] = {id, queue, 'failed', tostring(attempts)}
    else
      local run_at = now + delay
      redis.call('HSET', jk, 'st', 'pending', 'ra', run_at)
          count_move(qk, 'running', 'pending')
      if schedule(J, qk, tonumber(id), tonumber(v[5]), run_at, now) then woken[queue] = true end
      event(id, queue, 'pending', attempts)
      out[#out + 1] = {id, queue, 'pending', tostring(attempts)}
    end
  end
end
flush(ARGV[3], ARGV[4], origin)
return {#ids, out}
