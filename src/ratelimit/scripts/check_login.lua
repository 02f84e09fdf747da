-- Checks both failure counters of a login attempt.
--
-- KEYS[1] = `{prefix}lf:u:{lowercased username}`, KEYS[2] =
-- `{prefix}lf:ip:{client address}`; ARGV[1] = failures allowed per user,
-- ARGV[2] = failures allowed per address. Returns the seconds left (at
-- least 1) when a counter is at its limit, the user's first, else 0.
local u = tonumber(redis.call('GET', KEYS[1]) or '0')
local i = tonumber(redis.call('GET', KEYS[2]) or '0')
if u >= tonumber(ARGV[1]) then local t = redis.call('TTL', KEYS[1]) if t < 1 then t = 1 end return t end
if i >= tonumber(ARGV[2]) then local t = redis.call('TTL', KEYS[2]) if t < 1 then t = 1 end return t end
return 0
