-- Shared by every script (prepended when the store loads them).
-- Audit entries arrive as ARGV triples: event, actor, detail JSON.
-- `trail_key` false: the entry is not listed on the request's trail list (accept.lua keeps the
-- range of its entries in the record's `intake` field instead: see trail_range).
local function audit(audit_key, trail_key, event, request_id, actor, at, detail)
  local id = redis.call('XADD', audit_key, '*', 'event', event, 'request_id', request_id,
    'actor', actor, 'at', at, 'detail', detail)
  if trail_key then redis.call('RPUSH', trail_key, id) end
  return id
end

-- The end of the record's `intake` field: the first and last audit id of a run of consecutive entries of one
-- request written by one script (nothing else can write between them), `<first> <last>`, the
-- last shortened to its sequence number when both share the millisecond. Readers XRANGE it.
local function trail_range(first, last)
  local fms = string.match(first, '^(%d+)-')
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  if fms == lms then return first .. ' ' .. lseq end
  return first .. ' ' .. last
end

-- The agent's reply key is untrusted: usable when absent or a stream. Scripts call this with
-- their other checks, before any write, so an XADD to it can never fail half-way.
-- Returns the has_reply flag to use ('1' or '0') and, when unusable, the key's type.
local function reply_ok(reply_key, has_reply)
  if has_reply ~= '1' then return '0', nil end
  local t = redis.call('TYPE', reply_key)['ok']
  if t == 'none' or t == 'stream' then return '1', nil end
  return '0', t
end

-- Decision to {prefix}:decisions, and to the agent's reply stream when it named one.
-- `unreachable` (the reply key's type when reply_ok refused it) is recorded in the audit.
-- `entry_id` (optional): the queue entry an `invalid` decision refuses, published beside it so
-- an agent that sent another entry under the same id does not take that refusal for its answer.
local function publish(decisions_key, reply_key, has_reply, request_id, decision, at, audit_key, trail_key, unreachable, entry_id)
  local fields = {'request_id', request_id, 'decision', decision}
  if entry_id then
    table.insert(fields, 'entry_id'); table.insert(fields, entry_id)
  end
  redis.call('XADD', decisions_key, 'MAXLEN', '~', 100000, '*', unpack(fields))
  local streams = {decisions_key}
  if has_reply == '1' then
    redis.call('XADD', reply_key, 'MAXLEN', '~', 10000, '*', unpack(fields))
    table.insert(streams, reply_key)
  end
  local detail = {streams = streams}
  if unreachable then
    detail['reply_failed'] = reply_key .. ' is a ' .. unreachable .. ', not a stream'
  end
  return audit(audit_key, trail_key, 'published', request_id, 'system', at, cjson.encode(detail))
end

-- An interim message to {prefix}:messages (the HTTP API's event stream and webhooks). `after`
-- is the newest decision id at that moment: it places the message among the decisions, which
-- live in another stream, so an event stream resumes from either kind without a gap.
local function tell(messages_key, decisions_key, request_id, message)
  local last = redis.call('XREVRANGE', decisions_key, '+', '-', 'COUNT', 1)
  local after = '0-0'
  if last[1] then after = last[1][1] end
  redis.call('XADD', messages_key, 'MAXLEN', '~', 100000, '*', 'request_id', request_id,
    'message', message, 'after', after)
end

local function audits_from(argv, i, audit_key, trail_key, request_id, at)
  local n = tonumber(argv[i]); i = i + 1
  for _ = 1, n do
    audit(audit_key, trail_key, argv[i], request_id, argv[i + 1], at, argv[i + 2])
    i = i + 3
  end
  return i
end

-- Queue an outbox operation (the "queued again" rule, the one copy every script uses): an
-- operation leased or scheduled later than `due_ms` is not pulled forward (that would let a
-- second worker run it concurrently); it is marked to run once more when the current run
-- finishes. Returns 1 if queued now, 0 if marked to run again.
local function queue_op(outbox_key, again_key, member, due_ms)
  local score = redis.call('ZSCORE', outbox_key, member)
  if score and tonumber(score) > tonumber(due_ms) then
    redis.call('SADD', again_key, member)
    return 0
  end
  redis.call('ZADD', outbox_key, due_ms, member)
  return 1
end
