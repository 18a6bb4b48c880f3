-- Shared prelude of every inventory script (prepended when the scripts are loaded).
-- Keys (hash tag = SKU so one SKU's data shares a Cluster slot):
--   inv:{SKU}:c:LOC    hash  oh rs ss qt inc seq asof ts mvt   counters of SKU x LOC (mvt: movements
--                            before this time were trimmed from the mv zset)
--   inv:{SKU}:locs     set   locations holding the SKU
--   inv:{SKU}:in:LOC   hash  supply_id -> cjson {q, at, src}   incoming supply
--   inv:{SKU}:mv:LOC   zset  "seq:delta" scored by time: physical movements since the last snapshot
--   inv:res:ID         hash  st ch ord exp cr fp lines(cjson)   reservation
--   inv:holds          zset  reservation id scored by hold deadline (ms)
--   inv:skus / inv:locations / inv:locstate / inv:policy:CHANNEL   master data
--   inv:idem:SCOPE:KEY string cjson result of the first call (idempotency)
--   inv:outbox         stream  movements to relay to Kafka (field m = cjson list; POS sales also
--                              r = receipt key, i = idempotency key; a re-queued entry o = original id)
--   inv:onledger:REF   string  POS receipt: the outbox id the relay put on Kafka (TTL of the idem key)
--   inv:onledger:x:ID  string  receipt of outbox entry ID (entries flagged w = 1: reservations), 1 day
--   inv:ledger:armed   string  "run_id:lastsave" of the Redis process whose state was checked against
--                              the ledger: mutations are refused (UNAVAILABLE) until the run_id is the
--                              current one
--   inv:ledger:relayed string  highest outbox id the relay put on Kafka (where a catch-up starts)
--   inv:ledger:store   string  this store's id, sent with every ledger record (Kafka header)
-- Pub/sub channel inv:avail:<db> carries the changed counters for watchers.
-- Multi-SKU scripts touch several hash tags: fine on one Redis primary; on a Cluster a
-- reservation would need all its SKUs in one slot, or a saga.

local OUTBOX = 'inv:outbox'
-- Pub/sub channels are server-wide, not per db: the loader suffixes the db index.
local AVAIL_CHANNEL = 'inv:avail'
local HOLDS = 'inv:holds'
local MV_RETENTION_MS = 7 * 24 * 3600 * 1000

local ARMED = 'inv:ledger:armed'

-- Mutations run only on a Redis whose state inventory checked against the Kafka ledger since this
-- Redis process started: after a restart (a power cut loses AOF everysec's last second) the run_id
-- changes, and every mutation is refused until the catch-up (rebuild.catch_up) replayed what Redis
-- lacks and armed the new run_id. So no movement is ever computed from stale counters, and
-- sequence numbers continue after the ledger's, never repeat. Returns nil or an encoded error.
-- The armed value is "run_id:lastsave": LASTSAVE (set to the start time when Redis starts, moved
-- by RDB saves) is the cheap check (well under a microsecond); only when it moved is the run_id
-- read (INFO, ~11 us): a save in the same process is fine (the guard re-arms the new LASTSAVE),
-- a new process is not. (A restart within the same second as the last save would pass the cheap
-- check: with AOF only, LASTSAVE is the start time, so a process would have to live < 1 s.)
-- A db that was never armed and never relayed (a new or test db, not yet seen by the service) is
-- left alone; a db wiped entirely is restored with rebuild.py.
local function unarmed()
  local armed = redis.call('GET', ARMED)
  if not armed and redis.call('EXISTS', 'inv:ledger:relayed') == 0 then return nil end
  local run, saved = string.match(armed or '', '^(%x+):(%d+)$')
  if saved and tonumber(saved) == redis.call('LASTSAVE') then return nil end
  local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if run ~= run_id then
    return cjson.encode({e = {code = 'UNAVAILABLE',
      msg = 'inventory is checking its stock against the ledger after a Redis restart; retry'}})
  end
  return nil
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ckey(sku, loc) return 'inv:{' .. sku .. '}:c:' .. loc end
local function lockey(sku) return 'inv:{' .. sku .. '}:locs' end
local function inkey(sku, loc) return 'inv:{' .. sku .. '}:in:' .. loc end
local function mvkey(sku, loc) return 'inv:{' .. sku .. '}:mv:' .. loc end
local function reskey(id) return 'inv:res:' .. id end

local function load(sku, loc)
  local v = redis.call('HMGET', ckey(sku, loc), 'oh', 'rs', 'ss', 'qt', 'inc', 'seq', 'asof')
  return {sku = sku, loc = loc, oh = tonumber(v[1]) or 0, rs = tonumber(v[2]) or 0, ss = tonumber(v[3]) or 0,
          qt = tonumber(v[4]) or 0, inc = tonumber(v[5]) or 0, seq = tonumber(v[6]) or 0,
          asof = tonumber(v[7]) or 0}
end

local function atp(c)
  local a = c.oh - c.rs - c.ss
  if a < 0 then return 0 end
  return a
end

local function err(code, msg, extra)
  local e = {code = code, msg = msg}
  if extra then for k, v in pairs(extra) do e[k] = v end end
  return cjson.encode({e = e})
end

-- Catalogue checks: returns nil when fine, or an encoded error.
local function check_sku(sku, field)
  if redis.call('HEXISTS', 'inv:skus', sku) == 0 then
    return err('NOT_FOUND', 'unknown SKU ' .. sku, {field = field})
  end
  return nil
end

local function check_loc(loc, field)
  local st = redis.call('HGET', 'inv:locstate', loc)
  if not st then
    return err('NOT_FOUND', 'unknown location ' .. loc, {field = field})
  end
  return nil, st
end

-- Collects movements and availability changes of one script call; flush() writes them.
local Batch = {}
Batch.__index = Batch

local function new_batch(ts)
  return setmetatable({ts = ts, moves = {}, changed = {}, order = {}}, Batch)
end

-- Saves counters c (after seq++) and records the movement m (a table of extra fields).
function Batch:move(c, kind, doh, drs, dqt, m)
  c.seq = c.seq + 1
  local k = ckey(c.sku, c.loc)
  redis.call('HSET', k, 'oh', c.oh, 'rs', c.rs, 'ss', c.ss, 'qt', c.qt, 'inc', c.inc, 'seq', c.seq,
             'asof', c.asof, 'ts', self.ts)
  redis.call('SADD', lockey(c.sku), c.loc)
  if doh ~= 0 and kind ~= 'SNAPSHOT_APPLIED' then
    local mk = mvkey(c.sku, c.loc)
    redis.call('ZADD', mk, self.ts, c.seq .. ':' .. doh)
    local cutoff = self.ts - MV_RETENTION_MS
    if redis.call('ZREMRANGEBYSCORE', mk, '-inf', '(' .. cutoff) > 0 then
      -- Movements before cutoff are gone: a snapshot older than that can no longer be applied.
      redis.call('HSET', k, 'mvt', cutoff)
    end
  end
  m = m or {}
  m.k = kind; m.s = c.sku; m.l = c.loc; m.doh = doh; m.drs = drs; m.dqt = dqt
  m.oh = c.oh; m.rs = c.rs; m.ss = c.ss; m.qt = c.qt; m.inc = c.inc; m.seq = c.seq; m.ts = self.ts
  table.insert(self.moves, m)
  local key = c.sku .. '@' .. c.loc
  if not self.changed[key] then table.insert(self.order, key) end
  self.changed[key] = {s = c.sku, l = c.loc, oh = c.oh, rs = c.rs, ss = c.ss, qt = c.qt, inc = c.inc,
                       seq = c.seq, ts = self.ts}
end

-- Master-data events (already serialized protobuf, relayed as is).
function Batch:meta(event_type, key, payload_b64)
  table.insert(self.moves, {meta = event_type, key = key, p = payload_b64, ts = self.ts})
  -- A location or a channel policy changes what every open watch shows: tell them to re-read.
  if event_type ~= 'tutti.inventory.v1.SkuRegistered' then self.views_changed = true end
end

-- Writes the outbox entry and the change notice; returns the outbox entry id ('' if nothing moved)
-- and the encoded movements. receipt/idem (optional, POS sales): the relay writes the key receipt
-- (with the TTL of idem) once the entry is on Kafka, atomically with deleting it (see relayed.lua).
-- want_receipt (reservations): the relay writes inv:onledger:x:<entry id> instead.
function Batch:flush(receipt, idem, want_receipt)
  if #self.moves == 0 then return '' end
  local encoded = cjson.encode(self.moves)
  local xid
  if receipt and receipt ~= '' then
    xid = redis.call('XADD', OUTBOX, '*', 'm', encoded, 'r', receipt, 'i', idem)
  elseif want_receipt then
    xid = redis.call('XADD', OUTBOX, '*', 'm', encoded, 'w', '1')
  else
    xid = redis.call('XADD', OUTBOX, '*', 'm', encoded)
  end
  if #self.order > 0 or self.views_changed then
    local out = {}
    for _, key in ipairs(self.order) do table.insert(out, self.changed[key]) end
    if self.views_changed then table.insert(out, {views = 1, ts = self.ts}) end
    redis.call('PUBLISH', AVAIL_CHANNEL, cjson.encode(out))
  end
  return xid, encoded
end

local function load_res(id)
  local v = redis.call('HMGET', reskey(id), 'st', 'ch', 'ord', 'exp', 'cr', 'fp', 'lines')
  if not v[1] then return nil end
  return {id = id, st = v[1], ch = v[2], ord = v[3] or '', exp = tonumber(v[4]) or 0, cr = tonumber(v[5]) or 0,
          fp = v[6] or '', lines = cjson.decode(v[7])}
end

local function save_res(r)
  redis.call('HSET', reskey(r.id), 'st', r.st, 'ch', r.ch, 'ord', r.ord, 'exp', r.exp, 'cr', r.cr, 'fp', r.fp,
             'lines', cjson.encode(r.lines))
end

-- Fields describing a reservation line in a ledger movement.
local function res_fields(r, line, extra)
  local m = {res = r.id, ord = r.ord, ch = r.ch, rst = r.st, lq = line.q, lr = line.r, lf = line.f,
             lo = line.q - line.r - line.f, exp = r.exp, cr = r.cr}
  if extra then for k, v in pairs(extra) do m[k] = v end end
  return m
end

local function open_total(r)
  local n = 0
  for _, line in ipairs(r.lines) do n = n + line.q - line.r - line.f end
  return n
end

-- After lines changed: closes the reservation when nothing is open.
local function settle(r, closing_status, closed_ttl_s)
  if open_total(r) == 0 then
    local any_fulfilled = false
    for _, line in ipairs(r.lines) do if line.f > 0 then any_fulfilled = true end end
    if any_fulfilled then r.st = 'FULFILLED' else r.st = closing_status end
    r.exp = 0
    redis.call('ZREM', HOLDS, r.id)
    return true
  end
  return false
end

-- Releases qty of each given line (or every open unit) of reservation r; the caller saves r.
-- lines: nil for all, or a list of {s, l, q}. Returns nil or an encoded error.
local function release_lines(batch, r, lines, kind, ref, why)
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
        return err('INVALID_ARGUMENT', 'line is not part of reservation ' .. r.id,
                   {field = 'lines[' .. (j - 1) .. ']'})
      end
      local line = r.lines[found]
      local open = line.q - line.r - line.f
      if want.q > open then
        table.insert(short, {i = j - 1, s = want.s, l = want.l, want = want.q, have = open})
      else
        table.insert(plan, {i = found, q = want.q})
      end
    end
    if #short > 0 then
      return err('FAILED_PRECONDITION', 'lines exceed the open quantity of reservation ' .. r.id, {short = short})
    end
  end
  for _, p in ipairs(plan) do
    local line = r.lines[p.i]
    line.r = line.r + p.q
  end
  return nil, plan
end

local function apply_release_plan(batch, r, plan, kind, ref, why)
  for _, p in ipairs(plan) do
    local line = r.lines[p.i]
    local c = load(line.s, line.l)
    c.rs = c.rs - p.q
    batch:move(c, kind, 0, -p.q, 0, res_fields(r, line, {ref = ref, why = why}))
  end
end
