-- Job helpers, after common.lua. J is the job area's key base, such as `{baton:jobs}:`.

-- `as`, `ae` and `ao` are the start, end and outcome of the last attempt (its number is `at`,
-- its owner `ow`, the error of a failed one `err`); earlier attempts are in the history list.
-- `tp` is the W3C traceparent the job was enqueued with, absent if none.
local JOB_FIELDS = {'q', 'p', 'pr', 'st', 'at', 'rt', 'ca', 'ra', 'fa', 'res', 'err', 'ow', 'tk', 'ex',
  'as', 'ae', 'ao', 'tp'}

local function job_key(J, id) return J .. 'job:' .. id end
local function history_key(J, id) return J .. 'hist:' .. id end
local function queue_key(J, queue) return named(J, 'q', queue) end

-- The member of a job in its queue's due set: among equal scores (priorities) members sort by
-- run_at, then id.
local function due_member(run_at, id)
  return string.format('%015d:%019d', run_at, id)
end

-- The position of each field in JOB_FIELDS.
local F = {}
for i, field in ipairs(JOB_FIELDS) do F[field] = i end

-- A job's fields in JOB_FIELDS order (false where absent), or nil for no such job.
local function read_job(J, id)
  local fields = redis.call('HMGET', job_key(J, id), unpack(JOB_FIELDS))
  if not fields[F.st] then return nil end
  return fields
end

-- A job as the client reads it: id, its fields in JOB_FIELDS order, and its earlier attempts
-- (there are none before the second attempt, so the list is read only from then on).
local function view_of(J, id, fields)
  local history = {}
  if tonumber(fields[F.at]) > 1 then history = redis.call('LRANGE', history_key(J, id), 0, -1) end
  return {tostring(id), fields, history}
end

local function job_view(J, id)
  local fields = read_job(J, id)
  if not fields then return false end
  return view_of(J, id, fields)
end

-- Count changes by queue key and state, applied once per script by `flush`.
local count_deltas = {}

-- Moves a job's count from one state to another in its queue's counts.
local function count_move(qk, from, to)
  local deltas = count_deltas[qk]
  if not deltas then
    deltas = {}
    count_deltas[qk] = deltas
  end
  if from then deltas[from] = (deltas[from] or 0) - 1 end
  if to then deltas[to] = (deltas[to] or 0) + 1 end
end

-- Puts a pending job where reserve finds it: due now, or scheduled for later. Returns whether
-- it is due now.
local function schedule(J, qk, id, priority, run_at, now)
  if run_at <= now then
    redis.call('ZADD', qk .. ':due', -priority, due_member(run_at, id))
    return true
  end
  redis.call('ZADD', qk .. ':sched', run_at, id)
  return false
end

-- Moves up to `chunk` scheduled jobs of a queue whose time has come into its due set.
local function promote(J, qk, now, chunk)
  local ids = redis.call('ZRANGEBYSCORE', qk .. ':sched', '-inf', now, 'LIMIT', 0, chunk)
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', job_key(J, id), 'pr', 'ra', 'st')
    redis.call('ZREM', qk .. ':sched', id)
    if v[3] == 'pending' then
      redis.call('ZADD', qk .. ':due', -tonumber(v[1]), due_member(tonumber(v[2]), tonumber(id)))
    end
  end
end

-- Ends the running attempt of a job with `outcome` (its error, if failed, is the job's `err`).
local function end_attempt(J, id, now, outcome)
  redis.call('HSET', job_key(J, id), 'ae', now, 'ao', outcome)
end

-- Before a new attempt starts: moves the last one (number `at`, its start, end, outcome, owner
-- and the job's last error) to the history list as a JSON object.
local function archive_attempt(J, id, at, started, ended, outcome, owner, message)
  if not started then return end
  local entry = '{"number":' .. at .. ',"owner":' .. cjson.encode(owner) .. ',"started_at":' ..
    started
  if ended then entry = entry .. ',"finished_at":' .. ended end
  if outcome then entry = entry .. ',"outcome":"' .. outcome .. '"' end
  if outcome == 'failed' and message then entry = entry .. ',"error":' .. cjson.encode(message) end
  redis.call('RPUSH', history_key(J, id), entry .. '}')
end

-- After a failed or expired attempt: the delay before the next one in milliseconds, or nil when
-- the job must fail now. `mode` is `policy`, `after` or `never`; `sample` in [0, 1) draws the
-- jitter.
local function retry_delay(retry_json, attempts, mode, after_ms, sample)
  local policy = cjson.decode(retry_json)
  if attempts >= tonumber(policy.max_attempts) then return nil end
  if mode == 'never' then return nil end
  if mode == 'after' then return after_ms end
  local exponent = attempts - 1
  if exponent < 0 then exponent = 0 end
  local initial = tonumber(policy.initial_backoff_ms)
  local cap = tonumber(policy.max_backoff_ms)
  local nominal = 0
  if initial > 0 then nominal = initial * (tonumber(policy.base) ^ exponent) end
  if nominal ~= nominal or nominal > cap then nominal = cap end
  local s = math.min(math.max(sample, 0), 1)
  local delay = nominal * (1 + tonumber(policy.jitter) * (2 * s - 1))
  if delay < 0 then delay = 0 end
  return math.floor(delay + 0.5)
end

-- Events of this script, published once at its end; wakes by queue.
local events = {}
local woken = {}
local quoted = {}
-- Whether another process listens for events: if not, none is built. ARGV[3] is the events
-- channel in every job script.
local announce = listened(ARGV[3])

local function event(id, queue, state, attempts)
  if not announce then return end
  local q = quoted[queue]
  if not q then
    q = cjson.encode(queue)
    quoted[queue] = q
  end
  events[#events + 1] = '{"job":' .. id .. ',"queue":' .. q .. ',"state":"' .. state ..
    '","attempts":' .. attempts .. '}'
end

-- Sends this script's events and wakes to other processes: `<origin> <json array>` on the
-- events channel, `<origin> <queue>` on the wake channel.
local function flush(events_channel, wake_channel, origin)
  for qk, deltas in pairs(count_deltas) do
    for state, delta in pairs(deltas) do
      if delta ~= 0 then redis.call('HINCRBY', qk .. ':counts', state, delta) end
    end
  end
  if #events > 0 then
    redis.call('PUBLISH', events_channel, origin .. ' [' .. table.concat(events, ',') .. ']')
  end
  if next(woken) ~= nil and listened(wake_channel) then
    for queue in pairs(woken) do
      redis.call('PUBLISH', wake_channel, origin .. ' ' .. queue)
    end
  end
end

-- Ends a job in terminal `state`.
local function finish(J, qk, id, from, state, now)
  redis.call('HSET', job_key(J, id), 'st', state, 'fa', now)
  redis.call('ZADD', J .. 'finished', now, id)
  count_move(qk, from, state)
end
