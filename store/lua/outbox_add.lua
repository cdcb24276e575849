-- Queue an outbox operation. If it is leased or scheduled later, it is not pulled forward
-- (that would let a second worker run it concurrently); it is marked to run once more when
-- the current run finishes. KEYS: outbox, again-set; ARGV: member, due_ms
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
