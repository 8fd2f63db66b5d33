-- Records a heartbeat: the owner's key expires by itself after ttl (SET PX), the beats set
-- remembers its expiry so that dead owners can be listed until forgotten, and the beat-times hash
-- remembers when it arrived.
-- KEYS: beats set, owner's key, beat-times hash. ARGV: owner, ttl ms.
local now = now_ms()
local expires = now + tonumber(ARGV[2])
redis.call('SET', KEYS[2], expires, 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], now)
return expires
