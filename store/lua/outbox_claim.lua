-- Lease up to N due outbox operations: each is rescheduled to the lease's end, so a worker
-- that dies mid-operation leaves it to be retried when the lease runs out.
-- KEYS: outbox; ARGV: now_ms, lease_until_ms, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
end
return due
