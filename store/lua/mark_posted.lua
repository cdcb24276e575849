-- Record where a request's card was posted and finish the post operation.
-- KEYS: record, trail, audit, outbox, outbox again-set
-- ARGV: request_id, member, lease_until_ms, channel, ts, now_iso, now_ms, rendered_version
--       (-1: not known, as for a card found again after a lost answer)
-- A card that shows an older version than the record (or one whose content is unknown) gets
-- an update queued; a decided record always does, so its card ends locked.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return {'missing'}
end
local score = redis.call('ZSCORE', KEYS[4], ARGV[2])
if score and tonumber(score) == tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[4], ARGV[2])
end
local ts = redis.call('HGET', KEYS[1], 'ts')
if ts then
  return {'exists', ts}
end
redis.call('HSET', KEYS[1], 'channel', ARGV[4], 'ts', ARGV[5], 'posted_at', ARGV[7])
redis.call('HDEL', KEYS[1], 'post_attempt')
audit(KEYS[3], KEYS[2], 'posted', ARGV[1], 'system', ARGV[6],
  cjson.encode({channel = ARGV[4], ts = ARGV[5]}))
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[8] or redis.call('HGET', KEYS[1], 'state') == 'decided' then
  queue_op(KEYS[4], KEYS[5], 'update:' .. ARGV[1], ARGV[7])
end
return {'posted', ARGV[5]}
