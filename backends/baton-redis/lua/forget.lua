-- Forgets an owner's heartbeat. KEYS: beats set, owner's key. ARGV: owner.
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
