-- Stores jobs, pending; returns the first id (the others follow it) and the time of the store.
-- Each queue's name joins the sorted set J .. 'queues' (all scored 0, so ordered by name).
-- ARGV: J, origin, events channel, wake channel, n, then n times: queue, payload, priority,
-- delay ms, retry policy, traceparent (empty for none).
local J, origin = ARGV[1], ARGV[2]
local n = tonumber(ARGV[5])
local now = now_ms()
local now_s = int(now)
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
-- Members to add per queue key and set, sent in chunks of 200 pairs.
local adds = {}
-- Queues already added to J .. 'queues' by this call.
local listed = {}
local function add(key, score, member)
  local list = adds[key]
  if not list then
    list = {}
    adds[key] = list
  end
  list[#list + 1] = score
  list[#list + 1] = member
  if #list >= 400 then
    redis.call('ZADD', key, unpack(list))
    adds[key] = {}
  end
end
for i = 0, n - 1 do
  local at = 6 + i * 6
  local queue, payload, priority = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local id = int(first + i)
  local run_at = now + tonumber(ARGV[at + 3])
  local run_at_s = int(run_at)
  local qk = queue_key(J, queue)
  if not listed[queue] then
    listed[queue] = true
    redis.call('ZADD', J .. 'queues', 0, queue)
  end
  local jk = job_key(J, id)
  redis.call('HSET', jk, 'q', queue, 'p', payload, 'pr', priority, 'st', 'pending', 'at', '0',
    'rt', ARGV[at + 4], 'ca', now_s, 'ra', run_at_s, 'tk', '0')
  if ARGV[at + 5] ~= '' then redis.call('HSET', jk, 'tp', ARGV[at + 5]) end
  add(qk .. ':ids', id, id)
  count_move(qk, nil, 'pending')
  if run_at <= now then
    add(qk .. ':due', int(-tonumber(priority)), due_member(run_at, id))
    woken[queue] = true
  else
    add(qk .. ':sched', run_at_s, id)
  end
  event(id, queue, 'pending', 0)
end
for key, list in pairs(adds) do
  if #list > 0 then redis.call('ZADD', key, unpack(list)) end
end
flush(ARGV[3], ARGV[4], origin)
return {first, now}
