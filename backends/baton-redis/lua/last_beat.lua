-- An owner's last beat: {beat time, expiry, now}, all ms, or nil if it never beat or was
-- forgotten. A beat time of -1 stands for a beat recorded before beat times were kept.
-- KEYS: beats set, beat-times hash. ARGV: owner.
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires then
    return false
end
local at = redis.call('HGET', KEYS[2], ARGV[1]) or -1
return {tonumber(at), tonumber(expires), now_ms()}
