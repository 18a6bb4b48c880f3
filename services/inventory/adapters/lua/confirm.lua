-- ConfirmReservation. ARGV: id, order_id
local id, order_id = ARGV[1], ARGV[2]
local not_armed = unarmed()
if not_armed then return not_armed end
local r = load_res(id)
if not r then return err('NOT_FOUND', 'unknown reservation ' .. id, {field = 'reservation_id'}) end
if r.st == 'CONFIRMED' then return cjson.encode({r = r}) end
if r.st ~= 'HELD' then
  return err('FAILED_PRECONDITION', 'reservation ' .. id .. ' is ' .. r.st .. ' and cannot be confirmed')
end
local ts = now_ms()
if r.exp > 0 and r.exp <= ts then
  return err('FAILED_PRECONDITION', 'hold ' .. id .. ' has expired')
end
r.st = 'CONFIRMED'
r.exp = 0
if order_id ~= '' then r.ord = order_id end
redis.call('ZREM', HOLDS, id)
save_res(r)
local batch = new_batch(ts)
for _, line in ipairs(r.lines) do
  if line.q - line.r - line.f > 0 then
    batch:move(load(line.s, line.l), 'RESERVATION_CONFIRMED', 0, 0, 0, res_fields(r, line, {ref = id}))
  end
end
local xid = batch:flush(nil, nil, true)
return cjson.encode({r = r, xid = xid})
