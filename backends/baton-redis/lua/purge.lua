-- Deletes up to `chunk` jobs that ended at or before now minus `older` ms; returns
-- {looked at, deleted}.
-- ARGV: J, origin, events channel, wake channel, older ms, chunk.
local J = ARGV[1]
local older, chunk = tonumber(ARGV[5]), tonumber(ARGV[6])
local cutoff = now_ms() - older
local ids = redis.call('ZRANGEBYSCORE', J .. 'finished', '-inf', cutoff, 'LIMIT', 0, chunk)
local deleted = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', J .. 'finished', id)
  local v = redis.call('HMGET', job_key(J, id), 'q', 'st')
  if v[1] then
    local qk = queue_key(J, v[1])
    redis.call('DEL', job_key(J, id), history_key(J, id))
    redis.call('ZREM', qk .. ':ids', id)
    count_move(qk, v[2], nil)
    deleted = deleted + 1
  end
end
flush(ARGV[3], ARGV[4], ARGV[2])
return {#ids, deleted}
