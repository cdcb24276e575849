-- Revoke (or expire) a grant once; audited with who and why, on the grant's request's trail too.
-- The caller read the grant and redacted it for the audit: the script removes it only if it is
-- still exactly that text (-1 otherwise: read it again).
-- KEYS: grants hash, audit, trail of the grant's request
-- ARGV: grant id, actor, now_iso, event (grant_revoked|grant_expired), grant JSON as read,
--       audit detail (the grant redacted), request id ('' = none)
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return 0 end
if text ~= ARGV[5] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
local trail = false
if ARGV[7] ~= '' then trail = KEYS[3] end
audit(KEYS[2], trail, ARGV[4], ARGV[7], ARGV[2], ARGV[3], ARGV[6])
return 1
