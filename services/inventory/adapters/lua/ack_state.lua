-- Is outbox entry ARGV[1] on the Kafka ledger? 'on' (the relay's receipt), 'pending' (still in the
-- outbox) or 'lost' (neither: gone in an AOF replay, a failover, a trim). As for POS sales, only
-- the receipt is proof; the entry's absence is not.
local xid = ARGV[1]
if redis.call('EXISTS', 'inv:onledger:x:' .. xid) == 1 then return 'on' end
if #redis.call('XRANGE', OUTBOX, xid, xid) > 0 then return 'pending' end
return 'lost'
