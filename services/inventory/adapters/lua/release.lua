-- ReleaseReservation / FulfilReservation.
-- ARGV: op (release|fulfil), id, idem_key ('' = none), idem_ttl_s, closed_ttl_s, reason, n, (sku, loc, qty)*n
-- n = 0 means every open unit.
local op, id, idem, idem_ttl, closed_ttl, why = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local n = tonumber(ARGV[7])
local not_armed = unarmed()
if not_armed then return not_armed end
if idem ~= '' then
  local prev = redis.call('GET', idem)
  if prev then return prev end
end
local r = load_res(id)
if not r then return err('NOT_FOUND', 'unknown reservation ' .. id, {field = 'reservation_id'}) end
if r.st ~= 'HELD' and r.st ~= 'CONFIRMED' and n == 0 then return cjson.encode({r = r}) end
local lines = nil
if n > 0 then
  lines = {}
  for i = 1, n do
    local base = 7 + (i - 1) * 3
    lines[i] = {s = ARGV[base + 1], l = ARGV[base + 2], q = tonumber(ARGV[base + 3])}
  end
end
local ts = now_ms()
if r.st == 'HELD' and r.exp > 0 and r.exp <= ts and op == 'fulfil' then
  return err('FAILED_PRECONDITION', 'hold ' .. id .. ' has expired')
end
local batch = new_batch(ts)
local ref = id
if idem ~= '' then ref = idem end
if op == 'release' then
  local e, plan = release_lines(batch, r, lines, 'RESERVATION_RELEASED', ref, why)
  if e then return e end
  settle(r, 'RELEASED')
  apply_release_plan(batch, r, plan, 'RESERVATION_RELEASED', ref, why)
else
  -- fulfil: same validation, but the units leave on_hand too.
  local plan = {}
  if lines == nil then
    for i, line in ipairs(r.lines) do
      local open = line.q - line.r - line.f
      if open > 0 then table.insert(plan, {i = i, q = open}) end
    end
  else
    local short = {}
    for j, want in ipairs(lines) do
      local found = nil
      for i, line in ipairs(r.lines) do
        if line.s == want.s and line.l == want.l then found = i end
      end
      if not found then
        return err('INVALID_ARGUMENT', 'line is not part of reservation ' .. id, {field = 'lines[' .. (j - 1) .. ']'})
      end
      local open = r.lines[found].q - r.lines[found].r - r.lines[found].f
      if want.q > open then
        table.insert(short, {i = j - 1, s = want.s, l = want.l, want = want.q, have = open})
      else
        table.insert(plan, {i = found, q = want.q})
      end
    end
    if #short > 0 then
      return err('FAILED_PRECONDITION', 'lines exceed the open quantity of reservation ' .. id, {short = short})
    end
  end
  for _, p in ipairs(plan) do r.lines[p.i].f = r.lines[p.i].f + p.q end
  settle(r, 'RELEASED')
  for _, p in ipairs(plan) do
    local line = r.lines[p.i]
    local c = load(line.s, line.l)
    c.rs = c.rs - p.q
    c.oh = c.oh - p.q
    batch:move(c, 'FULFILLED', -p.q, -p.q, 0, res_fields(r, line, {ref = ref, why = why}))
  end
end
save_res(r)
if r.st ~= 'HELD' and r.st ~= 'CONFIRMED' then redis.call('EXPIRE', reskey(id), closed_ttl) end
local xid = batch:flush(nil, nil, true)
local out = cjson.encode({r = r, xid = xid})
if idem ~= '' then redis.call('SET', idem, out, 'EX', idem_ttl) end
return out
