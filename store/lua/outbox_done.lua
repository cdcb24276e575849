-- Remove a leased operation, unless it was queued again after the lease was taken.
-- KEYS: outbox; ARGV: member, lease_until_ms, retry_at_ms ('' to remove)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
