-- Which item of a batch card posts the card's reminder: one reminder for the whole card, not
-- one per item. The first item whose reminder comes due takes the round; the card's other
-- items, due within `gap_ms` of it (by the scheduler's clock, either way), count theirs
-- without posting. The same item asking again within the gap (its post was retried) keeps it.
-- KEYS: the batch's reminder key   ARGV: request id, now_ms, gap_ms, ttl_s
-- Returns 1: this item posts the reminder; 0: the card's reminder of this round is posted.
local now, gap = tonumber(ARGV[2]), tonumber(ARGV[3])
local last = redis.call('GET', KEYS[1])
if last then
  local at, who = string.match(last, '^(%-?%d+)/(.*)$')
  at = tonumber(at)
  if at and math.abs(now - at) < gap then
    if who == ARGV[1] then return 1 end
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2] .. '/' .. ARGV[1], 'EX', tonumber(ARGV[4]))
return 1
