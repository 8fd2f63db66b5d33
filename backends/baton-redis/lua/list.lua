-- Lists jobs newest first: returns {jobs, next}, next the id bound of the following page or
-- false when no older job is left. At most `budget` jobs are looked at, so that a call's work
-- is bounded however sparse the matches are; a page may then hold fewer jobs than asked for.
-- ARGV: J, origin, events channel, wake channel, before (an exclusive id bound), limit, budget,
-- queue ('' for any), state ('' for any).
local J = ARGV[1]
local before, limit, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local queue, state = ARGV[8], ARGV[9]

-- The candidate ids, newest first, at most `budget` of them; and whether older ones are left.
local candidates = {}
local more = false
if queue ~= '' then
  local ids = redis.call('ZREVRANGEBYSCORE', queue_key(J, queue) .. ':ids', '(' .. ARGV[5], '-inf',
    'LIMIT', 0, budget + 1)
  for i = 1, math.min(#ids, budget) do candidates[i] = tonumber(ids[i]) end
  more = #ids > budget
else
  local top = math.min(before - 1, tonumber(redis.call('GET', KEYS[1]) or '0'))
  local bottom = math.max(1, top - budget + 1)
  for id = top, bottom, -1 do candidates[#candidates + 1] = id end
  more = bottom > 1
end

local jobs = {}
for i, id in ipairs(candidates) do
  local v = redis.call('HMGET', job_key(J, id), 'st', 'q')
  if v[1] and (state == '' or v[1] == state) and (queue == '' or v[2] == queue) then
    if #jobs == limit then
      -- An older match is left: the next page starts below the last one kept.
      return {jobs, jobs[#jobs][1]}
    end
    jobs[#jobs + 1] = job_view(J, id)
  end
  if i == #candidates and more then
    return {jobs, tostring(id)}
  end
end
return {jobs, false}
