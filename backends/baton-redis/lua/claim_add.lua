-- Adds the items not yet in the pool; returns how many. KEYS: P:free. ARGV: P, items...
local P = ARGV[1]
local added = 0
for i = 2, #ARGV do
  local item = ARGV[i]
  if not redis.call('ZSCORE', P .. ':free', item) and not redis.call('ZSCORE', P .. ':held', item) then
    redis.call('ZADD', P .. ':free', redis.call('INCR', P .. ':seq'), item)
    added = added + 1
  end
end
return added
