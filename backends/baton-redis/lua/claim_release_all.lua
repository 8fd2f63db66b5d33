-- Returns every item an owner holds, expired claims included; returns how many.
-- KEYS: P:free. ARGV: P, owner.
local P, owner = ARGV[1], ARGV[2]
local items = redis.call('SMEMBERS', owned_key(P, owner))
table.sort(items)
for _, item in ipairs(items) do make_free(P, item) end
redis.call('DEL', owned_key(P, owner))
return #items
