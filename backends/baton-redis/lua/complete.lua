-- Completes running jobs, each against its own lease; returns per job {'ok', job} or {'lost'}.
-- ARGV: J, origin, events channel, wake channel, n, then n times: id, owner, token, result,
-- brief. A brief completion (brief = '1', from the process that holds the running job) reads
-- only what the lease check needs and answers {'ok', now} instead of the job.
local J, origin = ARGV[1], ARGV[2]
local n = tonumber(ARGV[5])
local now = now_ms()
local now_s = int(now)
local out = {}
local ended = {}
for i = 0, n - 1 do
  local at = 6 + i * 5
  local id, owner, token, result = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local brief = ARGV[at + 4] == '1'
  local jk = job_key(J, id)
  local v
  if brief then
    local b = redis.call('HMGET', jk, 'st', 'ow', 'tk', 'ex', 'q', 'at')
    if b[1] then
      v = {}
      v[F.st], v[F.ow], v[F.tk], v[F.ex], v[F.q], v[F.at] = b[1], b[2], b[3], b[4], b[5], b[6]
    end
  else
    v = read_job(J, id)
  end
  if not v or v[F.st] ~= 'running' or v[F.ow] ~= owner or v[F.tk] ~= token or tonumber(v[F.ex]) <= now then
    out[i + 1] = {'lost'}
  else
    redis.call('HSET', jk, 'res', result, 'st', 'succeeded', 'fa', now_s, 'ae', now_s, 'ao',
      'succeeded')
    v[F.res], v[F.st], v[F.fa], v[F.ae], v[F.ao] = result, 'succeeded', now, now, 'succeeded'
    ended[#ended + 1] = id
    count_move(queue_key(J, v[F.q]), 'running', 'succeeded')
    event(id, v[F.q], 'succeeded', v[F.at])
    if brief then out[i + 1] = {'ok', now} else out[i + 1] = {'ok', view_of(J, id, v)} end
  end
end
-- In chunks, so that no call unpacks an unbounded list.
for first = 1, #ended, 200 do
  local ids, scored = {}, {}
  for i = first, math.min(first + 199, #ended) do
    ids[#ids + 1] = ended[i]
    scored[#scored + 1] = now_s
    scored[#scored + 1] = ended[i]
  end
  redis.call('ZREM', J .. 'running', unpack(ids))
  redis.call('ZADD', J .. 'finished', unpack(scored))
end
flush(ARGV[3], ARGV[4], origin)
return out
