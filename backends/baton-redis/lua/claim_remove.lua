-- Removes items, claimed or not; returns how many. KEYS: P:free. ARGV: P, items...
local P = ARGV[1]
local removed = 0
for i = 2, #ARGV do
  local item = ARGV[i]
  if redis.call('ZREM', P .. ':free', item) == 1 then
    removed = removed + 1
  elseif redis.call('ZSCORE', P .. ':held', item) then
    local lease = parse_lease(redis.call('HGET', P .. ':lease', item))
    if lease then redis.call('SREM', owned_key(P, lease.owner), item) end
    redis.call('HDEL', P .. ':lease', item)
    redis.call('ZREM', P .. ':held', item)
    removed = removed + 1
  end
end
return removed
