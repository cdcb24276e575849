-- Put a request on the open batch card of its group, or open a new batch; idempotent.
-- Batch keys are named from the prefix here (the prefix's hash tag keeps them in one slot).
-- KEYS: open-batch key of (channel, group), record
-- ARGV: prefix, new_batch_id, request_id, channel, group, now_ms, window_ms, max_items
local existing = redis.call('HGET', KEYS[2], 'batch')
if existing then
  return existing
end
local p = ARGV[1]
local bid = redis.call('GET', KEYS[1])
if bid then
  local items = p .. ':batch:' .. bid .. ':items'
  if redis.call('LLEN', items) < tonumber(ARGV[8]) then
    redis.call('RPUSH', items, ARGV[3])
    redis.call('HSET', KEYS[2], 'batch', bid)
    return bid
  end
end
bid = ARGV[2]
redis.call('HSET', p .. ':batch:' .. bid, 'group', ARGV[5], 'channel', ARGV[4], 'created_at', ARGV[6])
redis.call('RPUSH', p .. ':batch:' .. bid .. ':items', ARGV[3])
redis.call('SET', KEYS[1], bid, 'PX', ARGV[7])
redis.call('HSET', KEYS[2], 'batch', bid)
return bid
