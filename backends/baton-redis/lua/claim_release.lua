-- Returns a current claim's item to the back of the pool; returns {'ok'} or {'lost'}.
-- KEYS: P:free. ARGV: P, item, owner, token.
local P, item, owner, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not current_lease(P, item, owner, token, now_ms()) then return {'lost'} end
make_free(P, item)
return {'ok'}
