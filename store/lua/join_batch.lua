-- Put a request on the open batch card of its group, or open a new batch; idempotent.
-- A batch stays open only while its window runs, it has room, and one of its items still
-- waits for a person (undecided, or for a review batch not yet checked): a request never
-- joins a card whose items are all settled, it gets a new card (and its notification).
-- The open batch's item ids are data, so their keys cannot be named here: the caller reads
-- the open batch and its items first and passes their keys. This script checks the read is
-- still good (the open-batch key names the same batch, whose items still start with those
-- read: items are only ever appended) and decides as if it had read them itself; when it
-- cannot (another batch is open, or only items added since could keep it open) it writes
-- nothing and returns {'retry'}: the caller reads again.
-- KEYS: open-batch key of (channel, group), record, new batch, new batch's items,
--       then (when a batch was open) its items list and one record key per item id read
-- ARGV: new_batch_id, request_id, channel, group, now_ms, window_ms, max_items,
--       review ('1'/'0'), open batch id read ('' when none), force_new ('1'/'0'), item ids read...
local existing = redis.call('HGET', KEYS[2], 'batch')
if existing then
  return existing
end
if ARGV[10] ~= '1' then
  local bid = redis.call('GET', KEYS[1]) or ''
  if bid ~= ARGV[9] then
    return {'retry'}
  end
  if bid ~= '' then
    local n = #ARGV - 10
    if #KEYS ~= 5 + n then
      return redis.error_reply('join_batch: KEYS must hold a record key per item id read')
    end
    local items = redis.call('LRANGE', KEYS[5], 0, -1)
    if #items < n then
      return {'retry'}
    end
    for i = 1, n do
      if items[i] ~= ARGV[10 + i] then return {'retry'} end
    end
    if #items < tonumber(ARGV[7]) then
      local open = false
      for i = 6, #KEYS do
        local rec = KEYS[i]
        if ARGV[8] == '1' then
          open = redis.call('HEXISTS', rec, 'review') == 0 and redis.call('EXISTS', rec) == 1
        else
          open = redis.call('HGET', rec, 'state') == 'pending'
        end
        if open then break end
      end
      if open then
        redis.call('RPUSH', KEYS[5], ARGV[2])
        redis.call('HSET', KEYS[2], 'batch', bid)
        return bid
      end
      if #items > n then
        return {'retry'}
      end
    end
  end
end
local bid = ARGV[1]
redis.call('HSET', KEYS[3], 'group', ARGV[4], 'channel', ARGV[3], 'created_at', ARGV[5])
redis.call('RPUSH', KEYS[4], ARGV[2])
redis.call('SET', KEYS[1], bid, 'PX', ARGV[6])
redis.call('HSET', KEYS[2], 'batch', bid)
return bid
