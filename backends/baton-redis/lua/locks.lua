-- Lock helpers, after common.lua. L is the lock area's key base.
-- L:lock:<name> hash: o owner, t token, e expires, r reason, s since
-- L:held        sorted set (all scores 0, so ordered by name): names that may be held
-- L:token       counter: every grant's token, so a grant outranks every earlier one

local function lock_key(L, name) return named(L, 'lock', name) end

-- {name, owner, token, expires, reason, since} of a live holder of `name`, or nil.
local function live_holder(L, name, now)
  local v = redis.call('HMGET', lock_key(L, name), 'o', 't', 'e', 'r', 's')
  if v[1] and tonumber(v[3]) > now then
    return {name, v[1], v[2], v[3], v[4], v[5]}
  end
  return nil
end
