-- Record the after-the-fact review of an action that ran on its own; once per request.
-- A "wrong" verdict is an override: audited as such, and the agent is told on its reply stream.
-- KEYS: record, trail, audit, outbox, reply (or decisions), outbox again-set, deadlines,
--       decisions, messages (both absent for a canary: no agent hears of it)
-- ARGV: request_id, review JSON, verdict, now_ms, now_iso, has_reply, message JSON,
--       due_ms of `trust:<id>` (the review's trust count, made durable: docs/trust.md)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
if redis.call('HGET', KEYS[1], 'state') ~= 'decided' then
  return {'pending'}
end
local earlier = redis.call('HGET', KEYS[1], 'review')
if earlier == ARGV[2] then
  return {'ok'}  -- this very review (its person and time): the client's retry after a lost reply
end
if earlier then
  return {'reviewed', earlier}
end
local rid, at = ARGV[1], ARGV[5]
local has_reply, unusable = reply_ok(KEYS[5], ARGV[6])  -- checked before any write: an XADD cannot fail half-way
redis.call('HSET', KEYS[1], 'review', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
local review = cjson.decode(ARGV[2])
audit(KEYS[3], KEYS[2], 'reviewed', rid, review['by']['user_id'], at,
  cjson.encode({verdict = ARGV[3], reason_code = review['reason_code']}))
if ARGV[3] == 'wrong' then
  -- whether the agent was told, and why not: an override nobody hears of leaves a trace
  local detail = {reason_code = review['reason_code'], delivered = has_reply == '1'}
  if unusable then
    detail['reply_failed'] = KEYS[5] .. ' is a ' .. unusable .. ', not a stream'
  elseif ARGV[6] ~= '1' then
    detail['reply_failed'] = 'the request named no reply_to'
  end
  audit(KEYS[3], KEYS[2], 'overridden', rid, review['by']['user_id'], at, cjson.encode(detail))
  if has_reply == '1' then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'message_for', rid, 'message', ARGV[7])
  end
  if KEYS[9] then
    tell(KEYS[9], KEYS[8], rid, ARGV[7])
  end
end
queue_op(KEYS[4], KEYS[6], 'update:' .. rid, ARGV[4])
redis.call('ZADD', KEYS[7], ARGV[8], 'trust:' .. rid)
return {'ok'}
