-- Revoke (or expire) a grant once; audited with who and why.
-- KEYS: grants hash, audit; ARGV: grant id, actor, now_iso, event (grant_revoked|grant_expired)
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[4], 'request_id', cjson.decode(text)['request_id'] or '',
  'actor', ARGV[2], 'at', ARGV[3], 'detail', text)
return 1
