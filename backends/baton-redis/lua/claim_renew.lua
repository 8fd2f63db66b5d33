-- Extends a current claim; returns {'ok', expires} or {'lost'}.
-- KEYS: P:free. ARGV: P, item, owner, token, ttl ms.
local P, item, owner, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
if not current_lease(P, item, owner, token, now) then return {'lost'} end
local expires = now + ttl
redis.call('ZADD', P .. ':held', expires, item)
redis.call('HSET', P .. ':lease', item, token .. '|' .. expires .. '|' .. owner)
return {'ok', tostring(expires)}
