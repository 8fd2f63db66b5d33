-- Extends a running job's lease; returns {'ok', expires} or {'lost'}.
-- ARGV: J, origin, events channel, wake channel, id, owner, token, ttl ms.
local J = ARGV[1]
local id, owner, token, ttl = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local now = now_ms()
local jk = job_key(J, id)
local v = redis.call('HMGET', jk, 'st', 'ow', 'tk', 'ex')
if v[1] ~= 'running' or v[2] ~= owner or v[3] ~= token or tonumber(v[4]) <= now then
  return {'lost'}
end
local expires = now + ttl
redis.call('HSET', jk, 'ex', expires)
redis.call('ZADD', J .. 'running', expires, id)
return {'ok', expires}
