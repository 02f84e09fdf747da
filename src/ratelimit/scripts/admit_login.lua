-- Admits one login attempt and counts it, in one step: the count happens
-- before the password is verified, so concurrent attempts cannot all pass
-- the check before any of them is counted (issue #13).
--
-- KEYS[1] = `{prefix}lf:u:{lowercased username}`, KEYS[2] =
-- `{prefix}lf:ip:{client address}`; ARGV[1] = attempts allowed per user,
-- ARGV[2] = attempts allowed per address, ARGV[3] = the window in seconds
-- (a counter's window starts at its first attempt).
--
-- Returns the seconds left (at least 1) when a counter is at its limit, the
-- user's first, counting nothing; else 0, with both counters incremented.
local u = tonumber(redis.call('GET', KEYS[1]) or '0')
local i = tonumber(redis.call('GET', KEYS[2]) or '0')
if u >= tonumber(ARGV[1]) then local t = redis.call('TTL', KEYS[1]) if t < 1 then t = 1 end return t end
if i >= tonumber(ARGV[2]) then local t = redis.call('TTL', KEYS[2]) if t < 1 then t = 1 end return t end
for _, k in ipairs(KEYS) do
  if redis.call('INCR', k) == 1 then redis.call('EXPIRE', k, ARGV[3]) end
end
return 0
