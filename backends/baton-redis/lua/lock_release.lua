-- Frees the names a grant holds; returns {'ok'} if it held all of them unexpired, else
-- {'lost'} (the names it still had are freed all the same).
-- KEYS: L:held. ARGV: L, owner, token, unlock channel, origin, names...
local L, owner, token = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local all_current = true
local freed = false
for i = 6, #ARGV do
  local key = lock_key(L, ARGV[i])
  local v = redis.call('HMGET', key, 'o', 't', 'e')
  local granted = v[1] == owner and v[2] == token
  if not (granted and tonumber(v[3]) > now) then all_current = false end
  if granted then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], ARGV[i])
    freed = true
  end
end
if freed and listened(ARGV[4]) then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
if all_current then return {'ok'} end
return {'lost'}
