-- Forgets an owner's heartbeat. KEYS: beats set, owner's key, beat-times hash. ARGV: owner.
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
