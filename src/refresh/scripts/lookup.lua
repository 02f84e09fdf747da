-- Introspection. KEYS[1] = record; ARGV[1] = prefix. Nil unless the record
-- is active (unused, family live, not-before mark older than the family);
-- else `{family, sub, username or nil, client id, scope, iat, family
-- start, integrity tag or nil, ttl}` (tokend checks the tag).
local r = redis.call('HMGET', KEYS[1], 'fam', 'sub', 'usr', 'cid', 'scp', 'iat', 'fst', 'used', 'mac')
if not (r[1] and r[2] and r[4] and r[5] and r[6] and r[7]) or r[8] then return false end
local fkey = ARGV[1] .. 'rf:' .. r[1]
if redis.call('EXISTS', fkey) == 0 or redis.call('HEXISTS', fkey, 'rev') == 1 then
  return false
end
local start = tonumber(r[7])
if not start then return false end
local mark = redis.call('GET', ARGV[1] .. 'nbf:' .. r[2])
if mark then
  local m = tonumber(mark)
  if not m or m >= start then return false end
end
return {r[1], r[2], r[3] or false, r[4], r[5], r[6], r[7], r[9] or false, redis.call('TTL', KEYS[1])}
