-- The policy in force, audited once per change: a replica that starts or reloads on the
-- policy the trail last named writes nothing; any other digest is one `policy_changed` entry
-- (with the digest it replaces), whether it was changed while the bot ran or while it was down.
-- KEYS: policy hash, audit
-- ARGV: digest, source, at, detail JSON ({source, digest}; `previous` is added here)
local previous = redis.call('HGET', KEYS[1], 'digest')
if previous == ARGV[1] then return '' end
-- the detail as Python wrote it (cjson would escape the path's slashes), `previous` appended
local detail = string.sub(ARGV[4], 1, -2) .. ',"previous":' .. cjson.encode(previous or cjson.null) .. '}'
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'source', ARGV[2], 'at', ARGV[3])
return redis.call('XADD', KEYS[2], '*', 'event', 'policy_changed', 'request_id', '', 'actor', 'system',
  'at', ARGV[3], 'detail', detail)
