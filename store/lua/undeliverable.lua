-- Slack refused a request's card for good: note it on the record (once), audit it once, list
-- it as undeliverable, and finish the operation. The request still expires by its deadline.
-- KEYS: record, trail, audit, undeliverable set, outbox, outbox again-set
-- ARGV: request_id, member, lease_until_ms, error, now_iso, now_ms
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HSETNX', KEYS[1], 'undeliverable', ARGV[4]) == 1 then
  audit(KEYS[3], KEYS[2], 'undeliverable', ARGV[1], 'system', ARGV[5],
    cjson.encode({op = ARGV[2], error = ARGV[4]}))
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
end
local score = redis.call('ZSCORE', KEYS[5], ARGV[2])
if score and tonumber(score) == tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[5], ARGV[2])
  redis.call('SREM', KEYS[6], ARGV[2])
end
return 1
