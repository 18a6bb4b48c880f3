-- Are outbox entries ARGV[1..n] on the Kafka ledger? For each: 'on' (the relay's receipt),
-- 'pending' (still in the outbox) or 'lost' (neither: gone in an AOF replay, a failover, a trim).
-- As for POS sales, only the receipt is proof; the entry's absence is not.
local out = {}
for i, xid in ipairs(ARGV) do
  if redis.call('EXISTS', 'inv:onledger:x:' .. xid) == 1 then
    out[i] = 'on'
  elseif #redis.call('XRANGE', OUTBOX, xid, xid) > 0 then
    out[i] = 'pending'
  else
    out[i] = 'lost'
  end
end
return out
