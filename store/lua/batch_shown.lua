-- The batch card is in Slack (posted or updated): record where, and mark each item on it
-- as posted (once). KEYS: batch, audit, then per item id (in ARGV's order) its record, trail
-- ARGV: batch_id, channel, ts, now_ms, now_iso, rendered (a digest of what Slack now shows),
-- item ids...
if #KEYS ~= 2 + 2 * (#ARGV - 6) then
  return redis.error_reply('batch_shown: KEYS must hold a record and a trail key per item id')
end
redis.call('HSET', KEYS[1], 'channel', ARGV[2], 'ts', ARGV[3], 'rendered', ARGV[6])
redis.call('HSETNX', KEYS[1], 'posted_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'post_attempt')
local marked = 0
for i = 7, #ARGV do
  local rid = ARGV[i]
  local rec = KEYS[3 + 2 * (i - 7)]
  local trail = KEYS[4 + 2 * (i - 7)]
  if redis.call('EXISTS', rec) == 1 and not redis.call('HGET', rec, 'ts') then
    redis.call('HSET', rec, 'channel', ARGV[2], 'ts', ARGV[3], 'posted_at', ARGV[4])
    audit(KEYS[2], trail, 'posted', rid, 'system', ARGV[5],
      cjson.encode({channel = ARGV[2], ts = ARGV[3], batch = ARGV[1]}))
    marked = marked + 1
  end
end
return marked
