-- Reads, at one instant: the seeded marker, the sequence number and the
-- stream's last id (`0-0` when there is no stream yet).
local m = redis.call('GET', KEYS[1])
local s = redis.call('GET', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then id = last[1][1] end
return {m, s, id}
