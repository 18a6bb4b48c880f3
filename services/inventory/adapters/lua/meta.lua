-- Master data (catalogue, locations, channel policies) and its ledger events, atomically.
-- ARGV[1]: cjson {del = {key...}, hset = {{key, field, value}...}, events = {{type, key, b64}...}}
local spec = cjson.decode(ARGV[1])
local not_armed = unarmed()
if not_armed then return not_armed end
for _, key in ipairs(spec.del or {}) do redis.call('DEL', key) end
for _, h in ipairs(spec.hset or {}) do redis.call('HSET', h[1], h[2], h[3]) end
local batch = new_batch(now_ms())
for _, ev in ipairs(spec.events or {}) do batch:meta(ev[1], ev[2], ev[3]) end
return batch:flush(nil, nil, true)
