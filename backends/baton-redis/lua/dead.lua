-- Owners whose last beat has expired. KEYS: beats set.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms())
