-- Returns to the pool every item whose claim expired or whose owner's heartbeat expired;
-- returns those items. KEYS: P:free, beats set. ARGV: P.
local P = ARGV[1]
local now = now_ms()
local reaped = {}
for _, item in ipairs(redis.call('ZRANGEBYSCORE', P .. ':held', '-inf', now)) do
  reaped[item] = true
end
for _, owner in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  for _, item in ipairs(redis.call('SMEMBERS', owned_key(P, owner))) do reaped[item] = true end
end
local items = {}
for item in pairs(reaped) do items[#items + 1] = item end
table.sort(items)
for _, item in ipairs(items) do make_free(P, item) end
return items
