-- Posting slots of one channel, shared by every replica and measured from the send: at most
-- `limit` posts are in flight or answered within the last `window_ms`, and a post counts from
-- the moment its answer came back (not from when it was allowed to go). Slack counts a post
-- when it receives it, which is before we see its answer, so the next post of the channel
-- reaches Slack at least `window_ms` after the previous one did, whatever the latency.
-- Time is Redis's own (TIME), so replicas with skewed clocks still agree.
--
-- Waiters queue in order (a 429'd post and one whose slot went to the backlog digest go first)
-- and are told when to come back: when the slot ahead of them is expected to free. A waiter
-- that does not come back within `grace_ms` of that loses its place (it may have gone).
-- A 429 closes the channel until Retry-After; nothing was posted, so it takes no slot.
--
-- A holder keeps its slot while its call runs by renewing the lease ('keep'); a holder that
-- never says 'done' (its process died or stalled) counts as answered when its lease ends. If it
-- was only late, its 'done' still counts its post from the answer (replacing the count its
-- lease's end made), so the next post goes a window after that answer all the same.
--
-- KEYS: slots (hash), queue (sorted set: waiting member -> ticket)
-- ARGV: op ('take' | 'done' | 'keep'), member, limit, window_ms, lease_ms, grace_ms,
--       take: front ('1': go before every waiter)
--       done: outcome ('posted' | 'maybe': it may have posted | 'none': nothing posted),
--             retry_after_ms (a 429 on the post; '0' otherwise)
-- Returns: take: 0 (the slot is this member's: post, then 'done') or the ms to wait; done: 0;
--          keep: 0 (the lease now runs `lease_ms` from now) or 1 (the slot is not held: its
--          lease ended, or it was never granted).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, member = ARGV[1], ARGV[2]
local limit, window, lease, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'busy', 'free', 'blocked_until', 'dur', 'lapsed')
local busy = s[1] and cjson.decode(s[1]) or {}  -- member -> {g = granted ms, x = lease end ms}
local free = s[2] and cjson.decode(s[2]) or {}  -- when each answered post leaves the window
local blocked = tonumber(s[3]) or 0
local dur = tonumber(s[4]) or 50                 -- a post's usual time from slot to answer
local lapsed = s[5] and cjson.decode(s[5]) or {} -- member -> when its lease's count leaves the window

-- a holder that never said 'done' (its process died) counts as answered when its lease ended
for m, e in pairs(busy) do
  if e.x <= now then
    busy[m] = nil
    lapsed[m] = e.x + window
  end
end
local kept = {}
for _, f in ipairs(free) do
  if f > now then table.insert(kept, f) end
end
free = kept

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

for m, f in pairs(lapsed) do
  if f <= now then lapsed[m] = nil end
end

local function held()
  return count(busy)
end

-- answered posts still in the window: those that said 'done' and those whose lease ended
local function counted()
  return #free + count(lapsed)
end

local function save()
  redis.call('HSET', KEYS[1], 'busy', held() > 0 and cjson.encode(busy) or '{}',
    'free', #free > 0 and cjson.encode(free) or '{}', 'blocked_until', blocked, 'dur', dur,
    'lapsed', count(lapsed) > 0 and cjson.encode(lapsed) or '{}')
  redis.call('PEXPIRE', KEYS[1], 3600000)
  redis.call('PEXPIRE', KEYS[2], 3600000)
end

if op == 'keep' then
  local e = busy[member]
  if not e then
    save()
    return 1
  end
  e.x = now + lease
  save()
  return 0
end

if op == 'done' then
  local e = busy[member]
  busy[member] = nil
  if ARGV[7] ~= 'none' then
    -- counted from this answer, even when the lease ended first (its count there is replaced)
    lapsed[member] = nil
    table.insert(free, now + window)
  end
  if e and ARGV[7] == 'posted' then dur = math.floor(0.7 * dur + 0.3 * math.max(0, now - e.g)) end
  local retry = tonumber(ARGV[8]) or 0
  if retry > 0 then  -- the channel is closed until then; this post goes first when it opens
    blocked = math.max(blocked, now + retry)
    redis.call('ZADD', KEYS[2], 0, member)
    redis.call('HSET', KEYS[1], 'back:' .. member, blocked)
  end
  save()
  return 0
end

if busy[member] then  -- asked again without 'done' (a retry after a crash): count it as answered now
  busy[member] = nil
  table.insert(free, now + window)
end
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[2], 0, member)
else
  redis.call('ZADD', KEYS[2], 'NX', now, member)
end
-- waiters ahead that did not come back in time lose their place
for _ = 1, 20 do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if head == nil or head == member then break end
  local back = tonumber(redis.call('HGET', KEYS[1], 'back:' .. head))
  if back and back + grace >= now then break end
  redis.call('ZREM', KEYS[2], head)
  redis.call('HDEL', KEYS[1], 'back:' .. head)
end

local rank = redis.call('ZRANK', KEYS[2], member)
if now >= blocked and rank < limit - held() - counted() then
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[1], 'back:' .. member)
  busy[member] = {g = now, x = now + lease}
  save()
  return 0
end
save()

-- when this member's turn should come: the rank-th slot to free, each reused once per window
local frees = {}
for _, f in ipairs(free) do table.insert(frees, f) end
for _, f in pairs(lapsed) do table.insert(frees, f) end
for _, e in pairs(busy) do table.insert(frees, math.max(now, e.g + dur) + window) end
while #frees < math.min(limit, rank + 1) do table.insert(frees, now) end
table.sort(frees)
local round = math.floor(rank / limit)
local at = frees[(rank % limit) + 1] + round * (window + dur)
at = math.max(at, blocked + round * (window + dur))
local wait = math.max(1, at - now)
redis.call('HSET', KEYS[1], 'back:' .. member, now + wait)
return wait
