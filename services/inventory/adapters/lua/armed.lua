-- The current Redis "run_id:lastsave" and the value inventory last armed (checked against the ledger).
return {string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. ':' .. redis.call('LASTSAVE'),
        redis.call('GET', ARMED) or ''}
