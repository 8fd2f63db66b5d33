-- Records a heartbeat: the owner's key expires by itself after ttl (SET PX), and the beats set
-- remembers its expiry so that dead owners can be listed until forgotten.
-- KEYS: beats set, owner's key. ARGV: owner, ttl ms.
local now = now_ms()
local expires = now + tonumber(ARGV[2])
redis.call('SET', KEYS[2], expires, 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
return expires
