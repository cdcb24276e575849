-- Store a valid request's effects and acknowledge its stream entry, atomically.
-- Checks first (still pending for the group, not a duplicate, reply key usable), then the
-- writes, XACK last: a failure can only happen before anything is written.
-- KEYS: requests, record, trail, audit, pending, outbox, decisions, reply (or decisions), actions,
--       deadlines, invalid marker
-- ARGV: group, entry_id, request_id, now_ms, now_iso, request, route, params, state,
--       decision ('' if none), has_reply, outbox_member ('' if none), action,
--       n_deadlines, (member, due_ms) pairs..., audits...
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 'redelivered'
end
local rid, at = ARGV[3], ARGV[5]
if redis.call('EXISTS', KEYS[2]) == 1 then
  audit(KEYS[4], KEYS[3], 'duplicate', rid, 'system', at, cjson.encode({entry_id = ARGV[2]}))
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'duplicate'
end
local has_reply, unusable = reply_ok(KEYS[8], ARGV[11])
if unusable then
  return 'reply_type:' .. unusable  -- nothing written: intake dead-letters the entry
end
redis.call('HSET', KEYS[2], 'request', ARGV[6], 'route', ARGV[7], 'params', ARGV[8],
  'state', ARGV[9], 'version', 0, 'votes', '[]', 'changes', '{}',
  'created_at', ARGV[4], 'entry_id', ARGV[2])
redis.call('DEL', KEYS[11])  -- an earlier invalid try of this id no longer answers for it
local i = 14
local nd = tonumber(ARGV[i]); i = i + 1
local deadlines = {}
for _ = 1, nd do
  table.insert(deadlines, {ARGV[i], ARGV[i + 1]}); i = i + 2
end
audits_from(ARGV, i, KEYS[4], KEYS[3], rid, at)
redis.call('SADD', KEYS[9], ARGV[13])
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[2], 'decision', ARGV[10], 'decided_at', ARGV[4])
  audit(KEYS[4], KEYS[3], 'decided', rid, 'policy', at, cjson.encode({status = cjson.decode(ARGV[10])['status']}))
  publish(KEYS[7], KEYS[8], has_reply, rid, ARGV[10], at, KEYS[4], KEYS[3])
else
  redis.call('ZADD', KEYS[5], ARGV[4], rid)
  for _, d in ipairs(deadlines) do
    redis.call('ZADD', KEYS[10], d[2], d[1])
  end
end
if ARGV[12] ~= '' then
  queue_op(KEYS[6], KEYS[6] .. ':again', ARGV[12], ARGV[4])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 'accepted'
