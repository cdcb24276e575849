-- Trim the requests stream of acknowledged entries, never an unread or unacknowledged one:
-- MINID is the oldest pending entry of any group on the stream, or else the lowest
-- last-delivered id (that entry is kept; everything older has been read and acknowledged).
-- KEYS: requests
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function older(a, b)  -- stream ids "ms-seq"
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local minid = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local keep = last
  local summary = redis.call('XPENDING', KEYS[1], name)
  if tonumber(summary[1]) > 0 and older(summary[2], keep) then keep = summary[2] end
  if minid == nil or older(keep, minid) then minid = keep end
end
if minid == nil or minid == '0-0' then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
