-- Every item: {free items, {item, lease}...}. KEYS: P:free. ARGV: P.
local P = ARGV[1]
local held = {}
for _, item in ipairs(redis.call('ZRANGE', P .. ':held', 0, -1)) do
  held[#held + 1] = {item, redis.call('HGET', P .. ':lease', item)}
end
return {redis.call('ZRANGE', P .. ':free', 0, -1), held}
