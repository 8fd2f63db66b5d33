-- Claim helpers, after common.lua. P is the pool's key base (`named(O, 'pool', pool)`), O the
-- owners area's base.
-- P:free   sorted set: unclaimed items by the order they became unclaimed
-- P:held   sorted set: claimed items by claim expiry
-- P:lease  hash: item -> "token|expires|owner"
-- P:tokens hash: item -> last token granted (kept after removal)
-- P:seq    counter for the free order
-- P:owned:<owner> set: the items an owner holds

local function owned_key(P, owner) return named(P .. ':', 'owned', owner) end

local function parse_lease(text)
  if not text then return nil end
  local token, expires, owner = string.match(text, '^(%d+)|(%-?%d+)|(.*)$')
  return {token = token, expires = tonumber(expires), owner = owner}
end

-- Makes a claimed item unclaimed, at the back of the free order.
local function make_free(P, item)
  local lease = parse_lease(redis.call('HGET', P .. ':lease', item))
  if lease then redis.call('SREM', owned_key(P, lease.owner), item) end
  redis.call('HDEL', P .. ':lease', item)
  redis.call('ZREM', P .. ':held', item)
  redis.call('ZADD', P .. ':free', redis.call('INCR', P .. ':seq'), item)
end

-- The current lease of `item` if it matches owner and token and has not expired.
local function current_lease(P, item, owner, token, now)
  local lease = parse_lease(redis.call('HGET', P .. ':lease', item))
  if lease and lease.owner == owner and lease.token == token and lease.expires > now then
    return lease
  end
  return nil
end
