-- Finish a leased operation: reschedule it (retry_at), run it once more (queued again while
-- leased), or remove it. Nothing happens unless the lease is still ours.
-- KEYS: outbox, again-set; ARGV: member, lease_until_ms, retry_at_ms ('' to finish), now_ms
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
elseif redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
