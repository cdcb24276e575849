-- Dead-letter an entry that cannot be accepted, tell its agent when possible, acknowledge it.
-- Checks first, writes next, XACK last. An id that already has a record is live: its
-- decision belongs to that record, so an invalid entry reusing it publishes nothing and
-- leaves no invalid marker.
-- KEYS: requests, dead, audit, trail, decisions, reply (or decisions), invalid marker, record,
--       the HTTP API's queued marker of the id (store/api_requests.py)
-- ARGV: group, entry_id, error, now_iso, request_id, decision ('' if none), has_reply,
--       dead_max_len, dead_min_id ('' for no age limit), published request_id, taken ('1': the
--       entry is another agent's (or action's) under an id a request holds: its decision goes to
--       its own reply_to alone, never to decisions, no marker; the caller never passes the
--       holder's reply_to), audit event ('invalid'; 'withdraw_refused' for a refused withdrawal),
--       raw field pairs...
-- The published entries also carry `entry_id`: the refused queue entry (another entry under
-- the same id is not refused by it, and its agent must not take this for its answer).
-- The published request_id is the id the agent sent, even one outside the id alphabet (so a
-- waiting agent recognises its answer); keys are named from request_id, always a valid id.
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 'redelivered'
end
local live = redis.call('EXISTS', KEYS[8]) == 1
local has_reply, unusable = reply_ok(KEYS[6], ARGV[7])
-- the entry's own fields first, the bot's last: an entry may hold an `error` or `entry_id` of
-- its own, and a reader that keeps one value per name must get the bot's
local fields = {}
for i = 13, #ARGV do table.insert(fields, ARGV[i]) end
for _, v in ipairs({'error', ARGV[3], 'entry_id', ARGV[2], 'at', ARGV[4]}) do table.insert(fields, v) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', unpack(fields))
if ARGV[9] ~= '' then
  redis.call('XTRIM', KEYS[2], 'MINID', ARGV[9])
end
local detail = {entry_id = ARGV[2], error = ARGV[3], live = live}
local answer_taken = live and ARGV[6] ~= '' and ARGV[11] == '1' and has_reply == '1'
if answer_taken then detail['answered'] = KEYS[6] end
audit(KEYS[3], KEYS[4], ARGV[12], ARGV[5], 'system', ARGV[4], cjson.encode(detail))
if answer_taken then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 10000, '*', 'request_id', ARGV[10], 'decision', ARGV[6],
             'entry_id', ARGV[2])
elseif ARGV[6] ~= '' and not live then
  redis.call('SET', KEYS[7], ARGV[6], 'EX', 604800)
  publish(KEYS[5], KEYS[6], has_reply, ARGV[10], ARGV[6], ARGV[4], KEYS[3], KEYS[4], unusable, ARGV[2])
end
-- an entry the HTTP API queued: its refusal is kept beside it, for its own agent alone
if redis.call('HEXISTS', KEYS[9], 'q:' .. ARGV[2]) == 1 then
  redis.call('HSET', KEYS[9], 'r:' .. ARGV[2], ARGV[3], 'x:' .. ARGV[2], ARGV[6])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if live then return 'dead_live' end
return 'dead'
