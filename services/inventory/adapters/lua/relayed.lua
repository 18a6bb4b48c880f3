-- After Kafka acknowledged a batch: deletes its outbox entries and, for POS sales, writes the
-- receipt the ack waits for, in one atomic step (so no entry is ever both gone and unreceipted
-- once relayed). The receipt lives as long as the sale's idempotency record.
-- ARGV: outbox key, then per entry: id, receipt key ('' = none), idempotency key
local outbox = ARGV[1]
local deleted = 0
for i = 2, #ARGV, 3 do
  local id, receipt, idem = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  deleted = deleted + redis.call('XDEL', outbox, id)
  if receipt ~= '' then
    local ttl = redis.call('PTTL', idem)
    if ttl > 0 then redis.call('SET', receipt, id, 'PX', ttl) end
  end
end
return deleted
