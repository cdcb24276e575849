-- Pace Slack calls with a token bucket shared by every replica, by reservation: a caller
-- that must wait is given its own future slot (tokens go below zero), and when it comes back
-- at that slot it goes without asking again. So a burst drains in order, one per slot, with
-- no thundering herd; a 429 (blocked_until) drops every reservation and closes the bucket.
-- KEYS: bucket, reservations (hash member -> slot ms)
-- ARGV: member, now_ms, rate_per_s, burst, blocked_until_ms ('' unless a 429 said so),
--       reserve ('0': a low-priority caller takes a free token or waits without a slot)
local member, now = ARGV[1], tonumber(ARGV[2])
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[5] ~= '' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'blocked_until', ARGV[5], 'tokens', 0, 'ts', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], 3600000)
  return tonumber(ARGV[5]) - now
end
local slot = tonumber(redis.call('HGET', KEYS[2], member))
if slot then
  if slot <= now + 5 then
    redis.call('HDEL', KEYS[2], member)
    return 0
  end
  return slot - now
end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'blocked_until')
local blocked = tonumber(b[3]) or 0
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
if ARGV[6] == '0' and (tokens < 1 or now < blocked) then
  -- gives way: no slot; come back when a token is free (later if reservations hold them)
  return math.max(blocked - now, math.ceil((1 - tokens) * 1000 / rate))
end
tokens = tokens - 1
local wait = 0
if tokens < 0 then
  wait = math.ceil(-tokens * 1000 / rate)
end
local at = now + wait
if at < blocked then
  tokens = tokens + 1
  return blocked - now
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', ts)
redis.call('PEXPIRE', KEYS[1], 3600000)
if wait > 0 then
  redis.call('HSET', KEYS[2], member, at)
  redis.call('PEXPIRE', KEYS[2], 3600000)
end
return wait
