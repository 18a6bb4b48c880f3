-- Availability read in one round trip. ARGV: channel, n_locs, loc*n, sku*
-- Returns cjson {policy = {buffer, x = {loc...}}, loc = {loc = state}, skus = {{s, known, levels}}}
local channel, nl = ARGV[1], tonumber(ARGV[2])
local wanted = {}
for i = 1, nl do table.insert(wanted, ARGV[2 + i]) end
local out = {skus = {}, loc = {}, policy = {buffer = 0, x = {}}}
if channel ~= '' then
  local raw = redis.call('HGETALL', 'inv:policy:' .. channel)
  for j = 1, #raw, 2 do
    if raw[j] == 'buffer' then out.policy.buffer = tonumber(raw[j + 1])
    elseif string.sub(raw[j], 1, 2) == 'x:' then table.insert(out.policy.x, string.sub(raw[j], 3)) end
  end
end
local seen = {}
for i = 3 + nl, #ARGV do
  local sku = ARGV[i]
  local entry = {s = sku, known = redis.call('HEXISTS', 'inv:skus', sku) == 1, levels = {}}
  local locs = wanted
  if nl == 0 then
    locs = redis.call('SMEMBERS', lockey(sku))
    table.sort(locs)
  end
  for _, loc in ipairs(locs) do
    local v = redis.call('HMGET', ckey(sku, loc), 'oh', 'rs', 'ss', 'qt', 'inc', 'seq', 'asof')
    local lv = {l = loc, oh = tonumber(v[1]) or 0, rs = tonumber(v[2]) or 0, ss = tonumber(v[3]) or 0,
                qt = tonumber(v[4]) or 0, inc = tonumber(v[5]) or 0, seq = tonumber(v[6]) or 0,
                asof = tonumber(v[7]) or 0, sup = {}}
    if lv.inc > 0 then
      local raw = redis.call('HGETALL', inkey(sku, loc))
      for j = 1, #raw, 2 do
        local s = cjson.decode(raw[j + 1])
        s.id = raw[j]
        table.insert(lv.sup, s)
      end
    end
    table.insert(entry.levels, lv)
    if not seen[loc] then
      seen[loc] = true
      out.loc[loc] = redis.call('HGET', 'inv:locstate', loc) or 'missing'
    end
  end
  table.insert(out.skus, entry)
end
return cjson.encode(out)
