-- Dead-letter an entry that cannot be accepted, tell its agent when possible, acknowledge it.
-- KEYS: requests, dead, audit, trail, decisions, reply (or decisions), invalid marker, record
-- ARGV: group, entry_id, error, now_iso, request_id, decision ('' if none), has_reply, raw field pairs...
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 'redelivered'
end
local fields = {'error', ARGV[3], 'entry_id', ARGV[2], 'at', ARGV[4]}
for i = 8, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('XADD', KEYS[2], '*', unpack(fields))
audit(KEYS[3], KEYS[4], 'invalid', ARGV[5], 'system', ARGV[4],
  cjson.encode({entry_id = ARGV[2], error = ARGV[3]}))
if ARGV[6] ~= '' then
  if redis.call('EXISTS', KEYS[8]) == 0 then
    redis.call('SET', KEYS[7], ARGV[6], 'EX', 604800)
  end
  publish(KEYS[5], KEYS[6], ARGV[7], ARGV[5], ARGV[6], ARGV[4], KEYS[3], KEYS[4])
end
return 'dead'
