-- Stats counters of the events a script writes (what each counts for: store/stats_ops.py).
-- `ops` is a JSON array of [field, amount, in_hour (1) or in the totals (0)]; the hour hash
-- expires at `expire_at` (epoch s, '' = never).
local function count_stats(ops, total_key, hour_key, expire_at)
  if ops == '' then return end
  local hourly = false
  for _, op in ipairs(cjson.decode(ops)) do
    if op[3] == 1 then
      redis.call('HINCRBY', hour_key, op[1], op[2]); hourly = true
    else
      redis.call('HINCRBY', total_key, op[1], op[2])
    end
  end
  if hourly and expire_at ~= '' then redis.call('EXPIREAT', hour_key, expire_at) end
end

-- The stats projector's consumer group (store.stats.STATS_GROUP; a test checks they agree).
local STATS_GROUP = 'stats'

-- Events a script counts itself need no reading by the projector. When the group has read
-- everything before them (its lag is 0), the script moves the group past its own entries
-- (stats_skip_end): the projector never wakes for a request that only went through intake.
-- Returns the group's entries-read when it may, else nil (behind, unknown, or no group yet).
local function stats_skip_begin(audit_key)
  if redis.call('EXISTS', audit_key) == 0 then return nil end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', audit_key)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == STATS_GROUP then
      if f['lag'] ~= 0 then return nil end  -- behind, or Redis cannot tell (false)
      if type(f['entries-read']) == 'number' then return f['entries-read'] end
      -- a group that has not read yet: caught up means it has read every entry ever added
      local s = redis.call('XINFO', 'STREAM', audit_key)
      for i = 1, #s, 2 do
        if s[i] == 'entries-added' then return s[i + 1] end
      end
      return nil
    end
  end
  return nil
end

local function stats_skip_end(audit_key, read_before, last_id, n)
  if read_before then
    redis.call('XGROUP', 'SETID', audit_key, STATS_GROUP, last_id, 'ENTRIESREAD', read_before + n)
  end
end
