-- Releases expired holds (at most ARGV[1] of them). ARGV: limit, closed_ttl_s. Returns the count.
local limit, closed_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
if unarmed() then return 0 end
local ts = now_ms()
local ids = redis.call('ZRANGEBYSCORE', HOLDS, '-inf', ts, 'LIMIT', 0, limit)
local batch = new_batch(ts)
local n = 0
for _, id in ipairs(ids) do
  local r = load_res(id)
  redis.call('ZREM', HOLDS, id)
  if r and r.st == 'HELD' and r.exp > 0 and r.exp <= ts then
    local _, plan = release_lines(batch, r, nil, 'RESERVATION_EXPIRED', id, 'hold expired')
    settle(r, 'EXPIRED')
    apply_release_plan(batch, r, plan, 'RESERVATION_EXPIRED', id, 'hold expired')
    save_res(r)
    redis.call('EXPIRE', reskey(id), closed_ttl)
    n = n + 1
  end
end
batch:flush()
return n
