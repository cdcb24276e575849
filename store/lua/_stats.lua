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
