-- What people made of one request, counted once per request (HSETNX on the record), so two
-- racing replicas or a retried call count it once. Promotes a new action after `after` clean
-- approvals; an override demotes a trusted one. `clean` counts clean approvals in a row: an
-- edit, a rejection or an override starts it again from zero, whatever the state (a trusted
-- action stays trusted; the policy's promotion steps read the run). Calibration bands are counted in the same step.
-- KEYS: trust hash, record, index set, audit, trail, calibration hash
-- ARGV: request_id, kind (clean|edited|rejected|override), after, now_iso, member, band ('' none),
--       agree ('1'/'0'), actor
local rid, kind, after, at, member = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
if redis.call('HSETNX', KEYS[2], 'trust_outcome', kind) == 0 then return {'dup'} end
redis.call('SADD', KEYS[3], member)
if ARGV[6] ~= '' then
  redis.call('HINCRBY', KEYS[6], member .. '|' .. ARGV[6] .. '|n', 1)
  if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[6], member .. '|' .. ARGV[6] .. '|agree', 1) end
end
local state = redis.call('HGET', KEYS[1], 'state') or 'new'
local pinned = redis.call('HGET', KEYS[1], 'pinned') == '1'
if redis.call('HSETNX', KEYS[1], 'state', 'new') == 1 then
  redis.call('HSET', KEYS[1], 'changed_at', at, 'changed_by', 'system', 'why', 'first seen')
end
redis.call('HINCRBY', KEYS[1], 'outcomes', 1)
redis.call('HSET', KEYS[1], 'last_at', at)
local result = 'counted'
local function change(to, why)
  redis.call('HSET', KEYS[1], 'state', to, 'changed_at', at, 'changed_by', ARGV[8], 'why', why)
  audit(KEYS[4], KEYS[5], 'trust_changed', rid, ARGV[8], at,
    cjson.encode({action = member, from = state, to = to, why = why}))
end
if kind == 'clean' then
  redis.call('HINCRBY', KEYS[1], 'approvals', 1)
  local clean = redis.call('HINCRBY', KEYS[1], 'clean', 1)
  if state == 'new' and not pinned and clean >= after then
    change('trusted', clean .. ' approvals without an override')
    result = 'promoted'
  end
elseif kind == 'override' then
  redis.call('HINCRBY', KEYS[1], 'overrides', 1)
  redis.call('HSET', KEYS[1], 'clean', 0)
  if state == 'trusted' and not pinned then
    change('new', 'overridden on request ' .. rid)
    result = 'demoted'
  end
else
  redis.call('HINCRBY', KEYS[1], 'disagreements', 1)
  redis.call('HSET', KEYS[1], 'clean', 0)
end
return {result, redis.call('HGET', KEYS[1], 'state'), redis.call('HGET', KEYS[1], 'clean')}
