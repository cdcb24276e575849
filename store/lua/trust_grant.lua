-- One person's "approve and allow similar" on a request: the grant exists once `quorum`
-- distinct people asked for it on that request (created once, whatever the retries), counting
-- only those whose approval is of the values as they stand (an edit since makes an earlier
-- approval stale, and the grant that person asked for with it counts no more).
-- KEYS: votes hash of the request, grants hash, audit, trail
-- ARGV: request_id, user, quorum, grant JSON object (without `by`), now_iso, votes_ttl_s, grant id,
--       the grant JSON object for the audit (the policy's `redact:` applied; without `by`),
--       the JSON list of the people whose approval is current (`user` among them)
local rid, user, quorum, at, gid = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[5], ARGV[7]
redis.call('HSET', KEYS[1], user, at)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local current = {}
for _, u in ipairs(cjson.decode(ARGV[9])) do current[u] = true end
local by = {}
for _, u in ipairs(redis.call('HKEYS', KEYS[1])) do
  if current[u] then by[#by + 1] = u end
end
table.sort(by)
if #by < quorum then return {'waiting', tostring(#by)} end
if redis.call('HEXISTS', KEYS[2], gid) == 1 then return {'exists', gid} end
-- `by` is spliced into the grant's JSON as sent: decoding it and encoding it again would round
-- its numbers to 14 digits (a `same` bound of 123456789012345 would cover 123456789012340)
local text = string.sub(ARGV[4], 1, -2) .. ',"by":' .. cjson.encode(by) .. '}'
-- the stored grant keeps raw `same` values (it matches on them); the audit gets them redacted
local detail = string.sub(ARGV[8], 1, -2) .. ',"by":' .. cjson.encode(by) .. '}'

redis.call('HSET', KEYS[2], gid, text)
audit(KEYS[3], KEYS[4], 'grant_created', rid, user, at, detail)
return {'created', gid}
