-- Reserves due jobs for several requests; returns, per request, the reserved jobs.
-- ARGV: J, origin, events channel, wake channel, promote chunk, requests, then per request:
-- owner, ttl ms, max, queue count, queues.
-- Requests naming one queue share one ZPOPMIN per queue; requests naming several look at the
-- head of each and take the best. A paused queue (in the set J .. 'paused') hands out nothing.
local J, origin = ARGV[1], ARGV[2]
local chunk = tonumber(ARGV[5])
local now = now_ms()
local now_s = int(now)
local reqs = {}
local at = 7
for r = 1, tonumber(ARGV[6]) do
  local nq = tonumber(ARGV[at + 3])
  local queues = {}
  for i = 1, nq do queues[i] = ARGV[at + 3 + i] end
  local expires = now + tonumber(ARGV[at + 1])
  reqs[r] = {owner = ARGV[at], expires = expires, expires_s = int(expires),
    max = tonumber(ARGV[at + 2]), queues = queues}
  at = at + 4 + nq
end

-- Paused queues hand out nothing.
local paused = {}
local function is_paused(queue)
  if paused[queue] == nil then
    paused[queue] = redis.call('SISMEMBER', J .. 'paused', queue) == 1
  end
  return paused[queue]
end

local promoted = {}
local function promote_once(queue)
  if not promoted[queue] then
    promote(J, queue_key(J, queue), now, chunk)
    promoted[queue] = true
  end
end

local running = {}
-- Reserves the picked members ({member, queue} each) for request `req`; returns the job views.
local function reserve_picks(req, picks)
  local jobs = {}
  for _, pick in ipairs(picks) do
    local queue = pick[2]
    local id = int(tonumber(string.sub(pick[1], 17)))
    local jk = job_key(J, id)
    local v = read_job(J, id)
    if v and v[F.st] == 'pending' then
      local attempts = tonumber(v[F.at]) + 1
      if v[F.as] then
        archive_attempt(J, id, v[F.at], v[F.as], v[F.ae], v[F.ao], v[F.ow], v[F.err])
        redis.call('HDEL', jk, 'ae', 'ao')
      end
      local token = tonumber(v[F.tk]) + 1
      redis.call('HSET', jk, 'st', 'running', 'ow', req.owner, 'ex', req.expires_s, 'tk', int(token),
        'at', int(attempts), 'as', now_s)
      v[F.st], v[F.ow], v[F.ex], v[F.tk], v[F.at], v[F.as] =
        'running', req.owner, req.expires, token, attempts, now
      v[F.ae], v[F.ao] = false, false
      running[#running + 1] = req.expires_s
      running[#running + 1] = id
      if #running >= 400 then
        redis.call('ZADD', J .. 'running', unpack(running))
        running = {}
      end
      count_move(queue_key(J, queue), 'pending', 'running')
      event(id, queue, 'running', attempts)
      jobs[#jobs + 1] = view_of(J, id, v)
    end
  end
  return jobs
end

local out = {}
-- Requests of one queue, grouped so that each queue is popped once.
local groups, order = {}, {}
for r, req in ipairs(reqs) do
  if #req.queues == 1 then
    local queue = req.queues[1]
    if not groups[queue] then
      groups[queue] = {}
      order[#order + 1] = queue
    end
    table.insert(groups[queue], r)
  end
end
for _, queue in ipairs(order) do
  if is_paused(queue) then
    for _, r in ipairs(groups[queue]) do out[r] = {} end
  else
    promote_once(queue)
    local total = 0
    for _, r in ipairs(groups[queue]) do total = total + reqs[r].max end
    local popped = redis.call('ZPOPMIN', queue_key(J, queue) .. ':due', total)
    local next_pop = 1
    for _, r in ipairs(groups[queue]) do
      local picks = {}
      while #picks < reqs[r].max and next_pop < #popped do
        picks[#picks + 1] = {popped[next_pop], queue}
        next_pop = next_pop + 2
      end
      out[r] = reserve_picks(reqs[r], picks)
    end
  end
end

for r, req in ipairs(reqs) do
  if #req.queues > 1 then
    local candidates = {}
    for _, queue in ipairs(req.queues) do
      if not is_paused(queue) then
        promote_once(queue)
        local due = redis.call('ZRANGE', queue_key(J, queue) .. ':due', 0, req.max - 1, 'WITHSCORES')
        for i = 1, #due, 2 do
          candidates[#candidates + 1] = {tonumber(due[i + 1]), due[i], queue}
        end
      end
    end
    table.sort(candidates, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    local picks = {}
    for i = 1, math.min(req.max, #candidates) do
      local member, queue = candidates[i][2], candidates[i][3]
      redis.call('ZREM', queue_key(J, queue) .. ':due', member)
      picks[#picks + 1] = {member, queue}
    end
    out[r] = reserve_picks(req, picks)
  end
end
if #running > 0 then redis.call('ZADD', J .. 'running', unpack(running)) end
flush(ARGV[3], ARGV[4], origin)
return out
