-- The current Redis run_id and the run_id inventory last armed (checked against the ledger).
return {string.match(redis.call('INFO', 'server'), 'run_id:(%x+)'), redis.call('GET', ARMED) or ''}
