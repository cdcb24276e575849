-- Store a valid request's effects and acknowledge its stream entry, atomically.
-- Checks first (still pending for the group, not a duplicate nor an id another agent or action
-- holds ('taken:<JSON of the holder's agent, action, reply_to>'), routed on the current pause
-- switch and seen-actions set, reply key usable), then the writes, XACK last: a failure can
-- only happen before anything is written.
-- KEYS: requests, record, trail, audit, pending, outbox, decisions, reply (or decisions when the
--       request names none), actions, deadlines, invalid marker, control, stats total, stats hour,
--       outbox again-set, [the action's trust hash, the request's canary marker: only with a
--       trust check; then the grants hash: only when the route auto-approves on a grant]
-- ARGV: group, entry_id, request_id, now_ms, now_iso, request, route ('' when decided: the
--       decision carries it), params ('' = the request's own), decision ('' if none: pending),
--       post card ('1' or ''), action, routed_paused ('1'/'0'), routed_first_use ('1'/'0',
--       '' = not used by the policy), stats ops JSON, hour expiry, agent, `received` detail,
--       `routed` detail, n_deadlines, (member, due_ms) pairs..., then the trust check (absent or
--       '' = none): routed as a canary ('1'/'0'), n_fields, (field, value) pairs of the action's
--       trust hash it was routed on, then the id of the standing grant the route approves on
--       (absent = none; revoked or expired since: 'trust')
-- (One batch of intake sends one call per entry in one pipeline: the fewer arguments, the
-- less each costs to send.)
-- Routing was computed in the caller from its in-process copy of the pause switch, the
-- seen actions and the action's trust; when one differs from what is stored now, nothing is
-- written and the verdict ('paused:<0|1>', 'first_use:<0|1>', 'trust') tells the caller to
-- route again.
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 'redelivered'
end
local rid, at = ARGV[3], ARGV[5]
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- the same id is the same request only for the same agent and action: another's entry under
  -- it is refused (intake dead-letters it, told who holds the id), never merged into this one
  local ok, held = pcall(cjson.decode, redis.call('HGET', KEYS[2], 'request') or '')
  if ok and type(held) == 'table' and (held['agent'] ~= ARGV[16] or held['action'] ~= ARGV[11]) then
    return 'taken:' .. cjson.encode({agent = held['agent'], action = held['action'],
                                     reply_to = held['reply_to'] or ''})
  end
  audit(KEYS[4], KEYS[3], 'duplicate', rid, 'system', at, cjson.encode({entry_id = ARGV[2]}))
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'duplicate'
end
local paused = '0'
if redis.call('HGET', KEYS[12], 'paused') == '1' then paused = '1' end
if paused ~= ARGV[12] then
  return 'paused:' .. paused
end
if ARGV[13] ~= '' then
  local first = '1'
  if redis.call('SISMEMBER', KEYS[9], ARGV[11]) == 1 then first = '0' end
  if first ~= ARGV[13] then
    return 'first_use:' .. first
  end
end
local t = 20 + 2 * tonumber(ARGV[19])
if ARGV[t] ~= nil and ARGV[t] ~= '' then
  local canary = '0'
  if redis.call('EXISTS', KEYS[17]) == 1 then canary = '1' end
  local n = tonumber(ARGV[t + 1])
  if canary ~= ARGV[t] or redis.call('HLEN', KEYS[16]) ~= n then return 'trust' end
  for i = 1, n do
    if redis.call('HGET', KEYS[16], ARGV[t + 2 * i]) ~= ARGV[t + 2 * i + 1] then return 'trust' end
  end
  local grant = ARGV[t + 2 * n + 2]
  if grant ~= nil and grant ~= '' and redis.call('HEXISTS', KEYS[18], grant) == 0 then return 'trust' end
end
local named = '0'
if KEYS[8] ~= KEYS[7] then named = '1' end
local has_reply, unusable = reply_ok(KEYS[8], named)
if unusable then
  return 'reply_type:' .. unusable  -- nothing written: intake dead-letters the entry
end
local decision = ARGV[9]
redis.call('DEL', KEYS[11])  -- an earlier invalid try of this id no longer answers for it
-- every event written here is counted here (or counts for nothing): the projector may skip them
local skip = stats_skip_begin(KEYS[4])
local first = audit(KEYS[4], false, 'received', rid, ARGV[16], at, ARGV[17])
local last = audit(KEYS[4], false, 'routed', rid, 'policy', at, ARGV[18])
redis.call('SADD', KEYS[9], ARGV[11])
if decision ~= '' then
  audit(KEYS[4], false, 'decided', rid, 'policy', at, cjson.encode({status = cjson.decode(decision)['status']}))
  last = publish(KEYS[7], KEYS[8], has_reply, rid, decision, at, KEYS[4], false)
  stats_skip_end(KEYS[4], skip, last, 4)
else
  stats_skip_end(KEYS[4], skip, last, 2)
  redis.call('ZADD', KEYS[5], ARGV[4], rid)
  local i = 19
  for _ = 1, tonumber(ARGV[i]) do
    redis.call('ZADD', KEYS[10], ARGV[i + 2], ARGV[i + 1]); i = i + 2
  end
end
-- The record keeps what cannot be derived, in as few hash fields as it can (each costs about
-- 60 bytes in a hash table): `intake` = `<created_at ms> <entry id> <trail range>` (the audit
-- entries written here are found by their id range, so a request decided at intake has no trail
-- list at all); a decided record has no `version` (0 until a review bumps it).
local intake = ARGV[4] .. ' ' .. ARGV[2] .. ' ' .. trail_range(first, last)
if decision ~= '' then
  redis.call('HSET', KEYS[2], 'request', ARGV[6], 'state', 'decided', 'decision', decision, 'intake', intake)
else
  redis.call('HSET', KEYS[2], 'request', ARGV[6], 'state', 'pending', 'version', 0, 'intake', intake)
end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], 'route', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'params', ARGV[8]) end
if ARGV[10] == '1' then
  queue_op(KEYS[6], KEYS[15], 'post:' .. rid, ARGV[4])
end
count_stats(ARGV[14], KEYS[13], KEYS[14], ARGV[15])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 'accepted'
