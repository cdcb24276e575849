-- Apply one transition computed from the record at an expected version: checks, then writes.
-- A reply key that is no longer a stream does not stop the decision: it is stored, published to
-- {prefix}:decisions, and the failure to reach reply_to is in the `published` audit entry.
-- KEYS: record, trail, audit, pending, outbox, decisions, reply (or decisions), deadlines,
--       outbox again-set, stats total, stats hour, requests (the queue),
--       messages (absent for a canary: no agent hears of it)
-- ARGV: request_id, expected_version, now_ms, now_iso, n_fields, field pairs...,
--       decision ('' if none), has_reply, outbox_member ('' if none), n_deadlines, members...,
--       n_schedule, (member, due_ms) pairs..., audits..., message ('' if none),
--       stats ops of the decision (JSON, '' if none), stats hour expiry, consumer group and
--       queue entry to acknowledge with the write ('' if none: a withdrawal sent over the
--       queue is acknowledged in the same step that applies it), apply token
-- A message is an interim note to the agent (take over, reply): added to the reply stream as
-- `message_for` + `message`, never as a `decision`, so readers of decisions skip it.
-- The apply token (random per call, last in ARGV) is kept on the record as `applied`: the
-- client's retry of a call whose reply was lost (a dropped connection, a timeout) finds its own
-- write there and answers 'ok' again, instead of 'decided' or 'conflict' for a change it made.
local rid, at = ARGV[1], ARGV[4]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local token = ARGV[#ARGV]
if token ~= '' and redis.call('HGET', KEYS[1], 'applied') == token then
  return {'ok', redis.call('HGET', KEYS[1], 'version')}
end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'pending' then
  return {'decided', state}
end
local version = redis.call('HGET', KEYS[1], 'version')
if version ~= ARGV[2] then
  return {'conflict', version}
end
-- the agent's reply key is checked with the rest, before any write (it may have changed since intake)
local has_reply, unusable = reply_ok(KEYS[7], ARGV[6 + 2 * tonumber(ARGV[5]) + 1])
local i = 6
local nf = tonumber(ARGV[5])
for _ = 1, nf do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local decision, member = ARGV[i], ARGV[i + 2]
i = i + 3
local nd = tonumber(ARGV[i]); i = i + 1
for _ = 1, nd do
  redis.call('ZREM', KEYS[8], ARGV[i]); i = i + 1
end
local ns = tonumber(ARGV[i]); i = i + 1
for _ = 1, ns do
  redis.call('ZADD', KEYS[8], ARGV[i + 1], ARGV[i]); i = i + 2
end
i = audits_from(ARGV, i, KEYS[3], KEYS[2], rid, at)
local message = ARGV[i] or ''
local stats_ops, stats_expire = ARGV[i + 1] or '', ARGV[i + 2] or ''
local ack_group, ack_entry = ARGV[i + 3] or '', ARGV[i + 4] or ''
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
if token ~= '' then redis.call('HSET', KEYS[1], 'applied', token) end
if decision ~= '' then
  redis.call('HSET', KEYS[1], 'state', 'decided', 'decision', decision)
  redis.call('ZREM', KEYS[4], rid)
  audit(KEYS[3], KEYS[2], 'decided', rid, 'system', at, cjson.encode({status = cjson.decode(decision)['status']}))
  publish(KEYS[6], KEYS[7], has_reply, rid, decision, at, KEYS[3], KEYS[2], unusable)
  count_stats(stats_ops, KEYS[10], KEYS[11], stats_expire)
end
if message ~= '' then
  if has_reply == '1' then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 'message_for', rid, 'message', message)
  end
  if KEYS[13] then
    tell(KEYS[13], KEYS[6], rid, message)
  end
  audit(KEYS[3], KEYS[2], 'messaged', rid, 'system', at,
    cjson.encode({event = cjson.decode(message)['event'], delivered = (has_reply == '1')}))
end
if member ~= '' then
  queue_op(KEYS[5], KEYS[9], member, ARGV[3])
end
if ack_entry ~= '' then
  redis.call('XACK', KEYS[12], ack_group, ack_entry)
end
return {'ok', tostring(v)}
