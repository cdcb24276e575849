-- A card posted after an attempt whose outcome was unknown (a timeout, a 5xx, a crash): keep
-- that attempt's note on the record or batch and queue a later look for a copy the attempt
-- may still leave in the channel. Nothing is written for a record or batch that is gone.
-- KEYS: record or batch, outbox; ARGV: note (JSON), member (`recheck:...`), due_ms
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'post_recheck', ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
return 1
