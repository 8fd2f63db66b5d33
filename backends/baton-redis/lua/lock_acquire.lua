-- Takes every name or none; returns {'ok', token, expires, since} or {'busy', holders...}.
-- KEYS: L:held. ARGV: L, owner, ttl ms, reason, names...
local L, owner, ttl, reason = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
local busy = {}
for i = 5, #ARGV do
  local holder = live_holder(L, ARGV[i], now)
  if holder then busy[#busy + 1] = holder end
end
if #busy > 0 then return {'busy', busy} end
local token = redis.call('INCR', L .. 'token')
local expires = now + ttl
for i = 5, #ARGV do
  redis.call('HSET', lock_key(L, ARGV[i]), 'o', owner, 't', token, 'e', expires, 'r', reason, 's', now)
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
end
return {'ok', tostring(token), tostring(expires), tostring(now)}
