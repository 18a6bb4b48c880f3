-- After Kafka acknowledged a batch: deletes its outbox entries and, for POS sales, writes the
-- receipt the ack waits for, in one atomic step (so no entry is ever both gone and unreceipted
-- once relayed). The receipt lives as long as the sale's idempotency record. Entries flagged
-- w = 1 (reservations) get the receipt inv:onledger:x:<entry id> (1 day). The highest id relayed
-- is kept in inv:ledger:relayed: a catch-up after a Redis restart reads the ledger from there.
-- ARGV: outbox key, then per entry: id, receipt key ('' = none), idempotency key, w flag
local outbox = ARGV[1]
local deleted = 0
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end
local top = redis.call('GET', 'inv:ledger:relayed') or '0-0'
local top_ms, top_seq = parse(top)
for i = 2, #ARGV, 4 do
  local id, receipt, idem, w = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  deleted = deleted + redis.call('XDEL', outbox, id)
  if receipt ~= '' then
    local ttl = redis.call('PTTL', idem)
    if ttl > 0 then redis.call('SET', receipt, id, 'PX', ttl) end
  end
  if w == '1' then redis.call('SET', 'inv:onledger:x:' .. id, '1', 'PX', 86400000) end
  local ms, seq = parse(id)
  if ms > top_ms or (ms == top_ms and seq > top_seq) then
    top, top_ms, top_seq = id, ms, seq
  end
end
redis.call('SET', 'inv:ledger:relayed', top)
return deleted
