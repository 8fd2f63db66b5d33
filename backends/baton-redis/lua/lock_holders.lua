-- Live holders ordered by name, forgetting expired ones. KEYS: L:held. ARGV: L.
local L = ARGV[1]
local now = now_ms()
local out = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local holder = live_holder(L, name, now)
  if holder then
    out[#out + 1] = holder
  else
    redis.call('DEL', lock_key(L, name))
    redis.call('ZREM', KEYS[1], name)
  end
end
return out
