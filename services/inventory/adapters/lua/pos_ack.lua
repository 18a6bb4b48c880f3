-- Is a POS sale on the Kafka ledger? A positive answer needs the relay's receipt; the absence of
-- the outbox entry alone proves nothing (lost in an AOF replay, a failover, a trim, by hand).
-- ARGV: idem_key, receipt_key
-- Returns 'on' (receipt, or a record rebuilt from the ledger), 'pending' (entry waits in the
-- outbox), 'requeued' (entry lost: its movements were appended again, under their original event
-- ids, and the record now points at the new entry), 'lost' (entry lost and nothing to re-queue
-- it from) or 'gone' (no idempotency record: the sale itself was lost and is not recorded).
local idem, receipt = ARGV[1], ARGV[2]
if redis.call('EXISTS', receipt) == 1 then return 'on' end
local raw = redis.call('GET', idem)
if not raw then return 'gone' end
local p = cjson.decode(raw)
if p.rebuilt or not p.xid or p.xid == '' then return 'on' end
if #redis.call('XRANGE', OUTBOX, p.xid, p.xid) > 0 then return 'pending' end
if not p.mj then return 'lost' end
local original = p.oxid or p.xid
local xid = redis.call('XADD', OUTBOX, '*', 'm', p.mj, 'r', receipt, 'i', idem, 'o', original)
p.oxid = original
p.xid = xid
redis.call('SET', idem, cjson.encode(p), 'KEEPTTL')
return 'requeued'
