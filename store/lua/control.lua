-- Pause or resume automation; a call that changes nothing writes nothing (no second audit
-- entry when a retried or repeated call arrives).
-- KEYS: control, audit
-- ARGV: paused ('1' pause, '' resume), reason, by, at, reason as audited (redacted by the policy:
-- the control hash keeps the reason as given, shown in Slack wherever the pause is shown)
local paused = redis.call('HGET', KEYS[1], 'paused') == '1'
if ARGV[1] == '1' then
  if paused and redis.call('HGET', KEYS[1], 'reason') == ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], 'paused', '1', 'reason', ARGV[2], 'by', ARGV[3], 'at', ARGV[4])
else
  if not paused then return 0 end
  redis.call('HDEL', KEYS[1], 'paused', 'reason', 'by', 'at')
end
local event = 'resumed'
if ARGV[1] == '1' then event = 'paused' end
local reason = cjson.null
if ARGV[5] ~= '' then reason = ARGV[5] end
redis.call('XADD', KEYS[2], '*', 'event', event, 'request_id', '', 'actor', ARGV[3], 'at', ARGV[4],
  'detail', cjson.encode({reason = reason}))
return 1
