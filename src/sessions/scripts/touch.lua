-- Uses a browser session: the record if it is still valid, its idle
-- lifetime restarted. KEYS[1] = the record; ARGV[1] = the key prefix,
-- ARGV[2] = now, ARGV[3] = idle lifetime, ARGV[4] = absolute lifetime
-- (seconds from the sign-in).
--
-- Nil, and the record deleted, when the absolute lifetime is over or the
-- user's "not before" mark (`{prefix}nbf:{sub}`: logout everywhere,
-- password change, disable) is at or after the sign-in. Else
-- {sub, username, auth time, tag}; the caller checks the tag.
local r = redis.call('HMGET', KEYS[1], 'sub', 'usr', 'at', 'mac')
if not r[1] or not r[3] then return false end
local now = tonumber(ARGV[2])
local at = tonumber(r[3])
if at == nil or at + tonumber(ARGV[4]) - now <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
local mark = tonumber(redis.call('GET', ARGV[1] .. 'nbf:' .. r[1]))
if mark ~= nil and mark >= at then
  redis.call('DEL', KEYS[1])
  return false
end
local idle = tonumber(ARGV[3])
local left = at + tonumber(ARGV[4]) - now
if left < idle then idle = left end
redis.call('EXPIRE', KEYS[1], idle)
return {r[1], r[2] or false, r[3], r[4] or false}
