-- An admin resets, pins or unpins an action's trust; audited as a system entry.
-- KEYS: trust hash, index set, audit
-- ARGV: op (reset|pin|unpin), member, actor, now_iso
local op, member, actor, at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local before = redis.call('HGET', KEYS[1], 'state') or 'new'
redis.call('SADD', KEYS[2], member)
if op == 'reset' then
  redis.call('HSET', KEYS[1], 'state', 'new', 'clean', 0, 'pinned', 0, 'changed_at', at,
    'changed_by', actor, 'why', 'reset by an admin')
elseif op == 'pin' then
  redis.call('HSETNX', KEYS[1], 'state', 'new')
  redis.call('HSET', KEYS[1], 'pinned', 1, 'changed_at', at, 'changed_by', actor, 'why', 'pinned by an admin')
else
  redis.call('HSET', KEYS[1], 'pinned', 0, 'changed_at', at, 'changed_by', actor, 'why', 'unpinned by an admin')
end
redis.call('XADD', KEYS[3], '*', 'event', 'trust_' .. op, 'request_id', '', 'actor', actor, 'at', at,
  'detail', cjson.encode({action = member, state = before}))
return redis.call('HGET', KEYS[1], 'state')
