-- One audit entry outside a transition (a refusal, a post failure, a system event), once per
-- idempotency key: a retried call returns the first entry's id and adds nothing.
-- KEYS: audit, trail (indexed when has_trail is '1'), once-marker
-- ARGV: event, request_id, actor, at, detail, has_trail
local done = redis.call('GET', KEYS[3])
if done then return done end
local id
if ARGV[6] == '1' then
  id = audit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
else
  id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[1], 'request_id', ARGV[2], 'actor', ARGV[3],
    'at', ARGV[4], 'detail', ARGV[5])
end
redis.call('SET', KEYS[3], id, 'EX', 86400)
return id
