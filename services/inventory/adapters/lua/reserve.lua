-- ReserveStock: all lines or none. ARGV: id, channel, order_id, ttl_s, fingerprint, n, (sku, loc, qty)*n
local id, channel, order_id = ARGV[1], ARGV[2], ARGV[3]
local ttl_s, fp, n = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local not_armed = unarmed()
if not_armed then return not_armed end

local existing = load_res(id)
if existing then
  if existing.fp ~= '' and existing.fp ~= fp then
    return err('ALREADY_EXISTS', 'reservation ' .. id .. ' already exists with different lines',
               {field = 'reservation_id'})
  end
  -- xid: the reserving outbox entry, so a retry waits for the ledger as the first call did.
  return cjson.encode({r = existing, dup = true, xid = redis.call('HGET', reskey(id), 'xid') or ''})
end

local policy = 'inv:policy:' .. channel
local buffer = tonumber(redis.call('HGET', policy, 'buffer')) or 0
local lines, counters, short = {}, {}, {}
for i = 1, n do
  local base = 6 + (i - 1) * 3
  local sku, loc, q = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local field = 'lines[' .. (i - 1) .. ']'
  local e = check_sku(sku, field .. '.sku')
  if e then return e end
  local e2, st = check_loc(loc, field .. '.location_id')
  if e2 then return e2 end
  local c = load(sku, loc)
  local avail = atp(c) - buffer
  if st ~= '1' or redis.call('HEXISTS', policy, 'x:' .. loc) == 1 then avail = 0 end
  if avail < 0 then avail = 0 end
  if q > avail then
    table.insert(short, {i = i - 1, s = sku, l = loc, want = q, have = avail})
  end
  lines[i] = {s = sku, l = loc, q = q, r = 0, f = 0}
  counters[i] = c
end
if #short > 0 then
  return err('FAILED_PRECONDITION', 'not enough stock', {short = short})
end

local ts = now_ms()
local exp = 0
local st = 'CONFIRMED'
if ttl_s > 0 then
  exp = ts + ttl_s * 1000
  st = 'HELD'
end
local r = {id = id, st = st, ch = channel, ord = order_id, exp = exp, cr = ts, fp = fp, lines = lines}
save_res(r)
if exp > 0 then redis.call('ZADD', HOLDS, exp, id) end
local batch = new_batch(ts)
for i = 1, n do
  local c = counters[i]
  c.rs = c.rs + lines[i].q
  batch:move(c, 'RESERVED', 0, lines[i].q, 0, res_fields(r, lines[i], {ref = id}))
end
local xid = batch:flush(nil, nil, true)
redis.call('HSET', reskey(id), 'xid', xid)
return cjson.encode({r = r, dup = false, xid = xid})
