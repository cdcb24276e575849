-- Start or end one person's absence (delegation while away), audited. The deadlines set gets
-- its end (member `away:<user>`, due at `until`, so a scheduler ends it on time) and a redraw
-- of the open cards naming them (`awaydraw:<user>`, due a moment later, once every replica's
-- copy of the absences has the change).
-- `end` is a compare-and-set: it ends the absence only if it is still exactly `expected` (the
-- JSON read before), so a window end racing a new `/hitl away` never ends the new one, and two
-- replicas ending the same absence audit it once.
-- KEYS: away hash, deadlines, audit
-- ARGV: op (set|end), user, absence JSON to store, expected JSON ('' for set), until_ms,
--       redraw_ms, event, actor, now_iso, detail JSON
local op, user = ARGV[1], ARGV[2]
if op == 'end' then
  if redis.call('HGET', KEYS[1], user) ~= ARGV[4] then return 0 end
  redis.call('ZREM', KEYS[2], 'away:' .. user)
else
  redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), 'away:' .. user)
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[6]), 'awaydraw:' .. user)
redis.call('HSET', KEYS[1], user, ARGV[3])
redis.call('XADD', KEYS[3], '*', 'event', ARGV[7], 'request_id', '', 'actor', ARGV[8], 'at', ARGV[9],
  'detail', ARGV[10])
return 1
