-- Stock movements of one command, all or nothing: receipts, adjustments, transfers, POS
-- sales and returns, quarantine, safety stock, incoming supply, snapshots.
-- ARGV: idem_key ('' = none), idem_ttl_s, fingerprint, reference, reason, ops (cjson list),
--       receipt key ('' = none; POS sales: the relay writes it once the movements are on Kafka, and
--       the idempotency record keeps the encoded movements so a lost outbox entry can be re-queued),
--       record key, record (JSON), record TTL s ('' = none; POS sales: the sale as recorded, kept
--       for returns to check receipts against, written with the sale or not at all)
-- op: {op='delta', s, l, k, doh, dqt, mode='strict'|'clamp', sup?, cp?}
--     {op='safety', s, l, ss} | {op='incoming', s, l, sid, q, at, src} | {op='snap', s, l, abs, asof}
local idem, idem_ttl, fp, ref, why = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local not_armed = unarmed()
if not_armed then return not_armed end
local ops = cjson.decode(ARGV[6])
local receipt = ARGV[7] or ''
local record_key, record, record_ttl = ARGV[8] or '', ARGV[9] or '', tonumber(ARGV[10] or '0')
if idem ~= '' then
  local prev = redis.call('GET', idem)
  if prev then
    local p = cjson.decode(prev)
    if p.fp and p.fp ~= '' and p.fp ~= fp then
      return err('ALREADY_EXISTS', 'id ' .. ref .. ' was already used for a different request')
    end
    p.dup = true
    p.mj = nil
    return cjson.encode(p)
  end
end

for i, o in ipairs(ops) do
  local field = 'lines[' .. (i - 1) .. ']'
  local e = check_sku(o.s, field .. '.sku')
  if e then return e end
  local e2 = check_loc(o.l, field .. '.location_id')
  if e2 then return e2 end
end

-- Snapshots: on_hand = counted + movements after as_of, and movements are only kept
-- MV_RETENTION_MS (trimmed when a new movement is recorded; the counters' mvt says up to when).
-- A count older than a trim would silently miss the trimmed movements: refuse it.
for _, o in ipairs(ops) do
  local trimmed = o.op == 'snap' and tonumber(redis.call('HGET', ckey(o.s, o.l), 'mvt')) or 0
  if o.op == 'snap' and o.asof < trimmed then
    return err('FAILED_PRECONDITION', 'as_of: older than the ' .. (MV_RETENTION_MS / 86400000) ..
               '-day movement history, so the movements since then can no longer be counted; ' ..
               'send a newer count')
  end
end

local function supplies(sku, loc)
  local raw = redis.call('HGETALL', inkey(sku, loc))
  local out, total = {}, 0
  for j = 1, #raw, 2 do
    local v = cjson.decode(raw[j + 1])
    v.id = raw[j]
    total = total + v.q
    table.insert(out, v)
  end
  return out, total
end

-- Applies op to counters c; returns err, doh, drs, dqt, info. write=true performs side writes.
local function step(c, o, write)
  if o.op == 'delta' then
    local doh, dqt, sf = o.doh, o.dqt, 0
    if o.mode == 'clamp' and doh < 0 then
      local free = c.oh - c.rs
      if free < 0 then free = 0 end
      if -doh > free then
        sf = -doh - free
        doh = -free
      end
    end
    if c.oh + doh < c.rs or c.oh + doh < 0 then
      return {s = o.s, l = o.l, want = -doh, have = c.oh - c.rs, what = 'free on-hand stock'}
    end
    if c.qt + dqt < 0 then
      return {s = o.s, l = o.l, want = -dqt, have = c.qt, what = 'quarantined stock'}
    end
    c.oh = c.oh + doh
    c.qt = c.qt + dqt
    if o.sup and o.sup ~= '' and write then
      local k = inkey(o.s, o.l)
      local raw = redis.call('HGET', k, o.sup)
      if raw then
        local v = cjson.decode(raw)
        v.q = v.q - (doh + dqt)
        if v.q <= 0 then redis.call('HDEL', k, o.sup) else redis.call('HSET', k, o.sup, cjson.encode(v)) end
      end
      local _, total = supplies(o.s, o.l)
      c.inc = total
    end
    return nil, doh, 0, dqt, {sf = sf, cp = o.cp}
  elseif o.op == 'safety' then
    c.ss = o.ss
    return nil, 0, 0, 0, {}
  elseif o.op == 'incoming' then
    if write then
      local k = inkey(o.s, o.l)
      if o.q <= 0 then
        redis.call('HDEL', k, o.sid)
      else
        redis.call('HSET', k, o.sid, cjson.encode({q = o.q, at = o.at, src = o.src}))
      end
      local _, total = supplies(o.s, o.l)
      c.inc = total
    end
    return nil, 0, 0, 0, {}
  elseif o.op == 'snap' then
    if c.asof >= o.asof then return nil, nil end
    local post = 0
    local mk = mvkey(o.s, o.l)
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', mk, '(' .. o.asof, '+inf')) do
      local d = tonumber(string.match(member, ':(-?%d+)$'))
      post = post + d
    end
    local target = o.abs + post
    if target < 0 then target = 0 end
    local sf = 0
    if target < c.rs then
      sf = c.rs - target
      target = c.rs
    end
    local doh = target - c.oh
    c.oh = target
    c.asof = o.asof
    if write then redis.call('ZREMRANGEBYSCORE', mk, '-inf', o.asof) end
    return nil, doh, 0, 0, {sf = sf, asof = o.asof}
  end
  return {s = o.s, l = o.l, what = 'unknown op'}
end

-- Phase 1: check everything on copies; nothing is written if any op fails.
local cache, short = {}, {}
for i, o in ipairs(ops) do
  local key = o.s .. '@' .. o.l
  if not cache[key] then cache[key] = load(o.s, o.l) end
  local e = step(cache[key], o, false)
  if e then
    e.i = i - 1
    table.insert(short, e)
  end
end
if #short > 0 then
  return err('FAILED_PRECONDITION', 'not enough stock', {short = short})
end

-- Phase 2: apply for real.
local ts = now_ms()
local batch = new_batch(ts)
local live, results, touched = {}, {}, {}
for i, o in ipairs(ops) do
  local key = o.s .. '@' .. o.l
  if not live[key] then live[key] = load(o.s, o.l) end
  local c = live[key]
  local _, doh, drs, dqt, info = step(c, o, true)
  local res = {s = o.s, l = o.l, applied = doh ~= nil, sf = 0}
  if doh ~= nil then
    local m = {ref = ref, why = why, sf = info.sf or 0, cp = info.cp, asof = info.asof}
    if o.op == 'incoming' or (o.sup and o.sup ~= '') then
      local list = supplies(o.s, o.l)
      m.sup = list
      m.supc = 1
    end
    batch:move(c, o.k, doh, drs, dqt, m)
    res.sf = info.sf or 0
  end
  touched[key] = c
  table.insert(results, res)
end
local levels = {}
for key, c in pairs(touched) do
  local list = supplies(c.sku, c.loc)
  levels[key] = {oh = c.oh, rs = c.rs, ss = c.ss, qt = c.qt, inc = c.inc, seq = c.seq, asof = c.asof, sup = list}
end
-- Every other command's entry gets a receipt by id: its answer waits for it too.
local xid, moves = batch:flush(receipt, idem, receipt == '')
if record_key ~= '' then
  -- The clock of the script, so the record's time is the movement's.
  local rec = cjson.decode(record)
  rec.at = batch.ts
  redis.call('SET', record_key, cjson.encode(rec), 'EX', record_ttl)
end
local out = {fp = fp, ops = results, levels = levels, xid = xid}
if idem ~= '' then
  if receipt ~= '' then out.mj = moves end
  redis.call('SET', idem, cjson.encode(out), 'EX', idem_ttl)
  out.mj = nil
end
out.dup = false
return cjson.encode(out)
