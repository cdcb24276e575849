-- One round of a batch card's timed event (its reminder, one of its escalation levels): the card
-- gets it once, not once per item. The first item due takes the round and sends it for the whole
-- card; the card's other items, due within `gap_ms` of it (by the scheduler's clock, either
-- way), count theirs without sending. The same item asking again within the gap (its send was
-- retried) keeps it. A hash: `at` (when the round was taken), `who` (the item sending it),
-- `done` (set once it was sent: what the others record with theirs).
-- KEYS: the round's key (store.keys.Keys.batch_round)
-- ARGV[1] 'claim': request id, now_ms, gap_ms, ttl_s
--   returns {1, done}: this item sends the round (done: '' until it is sent);
--           {0, done, who}: `who` sends this round ('' done: still sending)
-- ARGV[1] 'take': request id, ttl_s, from: the round passes from `from` (who no longer owes it:
--   decided meanwhile) to this item, unless it was sent or someone else took it. Returns 1 / 0.
-- ARGV[1] 'done': request id, data: the round was sent (only by the item holding it). 1 / 0.
local op = ARGV[1]
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
local at, who, done = unpack(redis.call('HMGET', KEYS[1], 'at', 'who', 'done'))
if op == 'take' then
  if who ~= ARGV[4] or (done and done ~= '') then return 0 end
  redis.call('HSET', KEYS[1], 'who', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
if op == 'done' then
  if who ~= ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], 'done', ARGV[3])
  return 1
end
local now, gap = tonumber(ARGV[3]), tonumber(ARGV[4])
at = tonumber(at)
if at and who and math.abs(now - at) < gap then
  if who == ARGV[2] then return {1, done or ''} end
  return {0, done or '', who}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'at', ARGV[3], 'who', ARGV[2], 'done', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, ''}
