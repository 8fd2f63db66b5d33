-- Shared by every script: the server's time, key names, and whether a channel has listeners.
-- Each script is this prelude, then its area's helpers (jobs.lua, claims.lua or locks.lua), then
-- its own body.

-- The server's clock in milliseconds since the epoch.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integer as the decimal string Redis stores: passed to a command as a Lua number, it would
-- be printed with `%.17g`, several times dearer.
local function int(n)
  return string.format('%d', n)
end

-- The key of `name` under `base` and `kind`: the name's byte length comes first, so that no
-- two names (whatever characters they hold) share a key.
local function named(base, kind, name)
  return base .. kind .. ':' .. #name .. ':' .. name
end

-- Whether anyone subscribes to `channel`: if not, a script spares the work of building its
-- messages.
local function listened(channel)
  local counts = redis.call('PUBSUB', 'NUMSUB', channel)
  return tonumber(counts[2]) > 0
end
