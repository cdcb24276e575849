-- Put a request on the open batch card of its group, or open a new batch; idempotent.
-- A batch stays open only while its window runs, it has room, and one of its items still
-- waits for a person (undecided, or for a review batch not yet checked): a request never
-- joins a card whose items are all settled, it gets a new card (and its notification).
-- Batch keys are named from the prefix here (the prefix's hash tag keeps them in one slot).
-- KEYS: open-batch key of (channel, group), record
-- ARGV: prefix, new_batch_id, request_id, channel, group, now_ms, window_ms, max_items, review ('1'/'0')
local existing = redis.call('HGET', KEYS[2], 'batch')
if existing then
  return existing
end
local p = ARGV[1]
local bid = redis.call('GET', KEYS[1])
if bid then
  local items = p .. ':batch:' .. bid .. ':items'
  if redis.call('LLEN', items) < tonumber(ARGV[8]) then
    local open = false
    for _, rid in ipairs(redis.call('LRANGE', items, 0, -1)) do
      local rec = p .. ':req:' .. rid
      if ARGV[9] == '1' then
        open = redis.call('HEXISTS', rec, 'review') == 0 and redis.call('EXISTS', rec) == 1
      else
        open = redis.call('HGET', rec, 'state') == 'pending'
      end
      if open then break end
    end
    if open then
      redis.call('RPUSH', items, ARGV[3])
      redis.call('HSET', KEYS[2], 'batch', bid)
      return bid
    end
  end
end
bid = ARGV[2]
redis.call('HSET', p .. ':batch:' .. bid, 'group', ARGV[5], 'channel', ARGV[4], 'created_at', ARGV[6])
redis.call('RPUSH', p .. ':batch:' .. bid .. ':items', ARGV[3])
redis.call('SET', KEYS[1], bid, 'PX', ARGV[7])
redis.call('HSET', KEYS[2], 'batch', bid)
return bid
