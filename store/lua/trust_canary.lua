-- Score one reviewer's decision on a canary, once: the mark that it was scored and the count it
-- adds are one step, so a crash between them loses nothing and the client's resend after a lost
-- reply finds the mark (0) instead of counting again.
-- KEYS: the canary's scored-by hash, the scores hash
-- ARGV: user, 'caught' or 'missed', how long the mark is kept (s)
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 0 then
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 1)
return 1
