-- The batch card is in Slack (posted or updated): record where, and mark each item on it
-- as posted (once). KEYS: batch, audit; ARGV: prefix, batch_id, channel, ts, now_ms, now_iso,
-- rendered (a digest of what Slack now shows), item ids...
local p = ARGV[1]
redis.call('HSET', KEYS[1], 'channel', ARGV[3], 'ts', ARGV[4], 'rendered', ARGV[7])
redis.call('HSETNX', KEYS[1], 'posted_at', ARGV[5])
redis.call('HDEL', KEYS[1], 'post_attempt')
local marked = 0
for i = 8, #ARGV do
  local rid = ARGV[i]
  local rec = p .. ':req:' .. rid
  if redis.call('EXISTS', rec) == 1 and not redis.call('HGET', rec, 'ts') then
    redis.call('HSET', rec, 'channel', ARGV[3], 'ts', ARGV[4], 'posted_at', ARGV[5])
    audit(KEYS[2], p .. ':trail:' .. rid, 'posted', rid, 'system', ARGV[6],
      cjson.encode({channel = ARGV[3], ts = ARGV[4], batch = ARGV[2]}))
    marked = marked + 1
  end
end
return marked
