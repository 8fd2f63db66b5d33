-- Claims the longest-unclaimed item, or else the item whose claim expired first; returns
-- {item, token, expires} or nil. KEYS: P:free. ARGV: P, owner, ttl ms.
local P, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local item
local free = redis.call('ZRANGE', P .. ':free', 0, 0)
if #free > 0 then
  item = free[1]
  redis.call('ZREM', P .. ':free', item)
else
  local expired = redis.call('ZRANGEBYSCORE', P .. ':held', '-inf', now, 'LIMIT', 0, 1)
  if #expired == 0 then return false end
  item = expired[1]
  local old = parse_lease(redis.call('HGET', P .. ':lease', item))
  if old then redis.call('SREM', owned_key(P, old.owner), item) end
end
local token = redis.call('HINCRBY', P .. ':tokens', item, 1)
local expires = now + ttl
redis.call('ZADD', P .. ':held', expires, item)
redis.call('HSET', P .. ':lease', item, token .. '|' .. expires .. '|' .. owner)
redis.call('SADD', owned_key(P, owner), item)
return {item, tostring(token), tostring(expires)}
