-- Extends every name of a grant, or none; returns {'ok', expires} or {'lost'}.
-- KEYS: L:held. ARGV: L, owner, token, ttl ms, names...
local L, owner, token, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
for i = 5, #ARGV do
  local holder = live_holder(L, ARGV[i], now)
  if not holder or holder[2] ~= owner or holder[3] ~= token then return {'lost'} end
end
local expires = now + ttl
for i = 5, #ARGV do redis.call('HSET', lock_key(L, ARGV[i]), 'e', expires) end
return {'ok', tostring(expires)}
