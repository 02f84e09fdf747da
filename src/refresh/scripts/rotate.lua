-- Rotates. KEYS[1] = presented record, KEYS[2] = new record. ARGV = prefix,
-- client id, now, grace, ttl, has requested scope ("1"/"0"), requested
-- scope (space-separated), the family's absolute lifetime in seconds from
-- its login (0: none; past it the token is invalid, and the new token's TTL
-- never reaches past it).
--
-- Returns `{'invalid'}`, `{'grace'}`, `{'scope'}`,
-- `{'reused', family, family ttl}` or
-- `{'ok', family, sub, username or nil, scope, granted scope, family start,
-- integrity tag or nil}`. The tag is copied to the new record (its fields
-- are the same) and checked by tokend, which holds the key, on the reply.
local r = redis.call('HMGET', KEYS[1], 'fam', 'sub', 'usr', 'cid', 'scp', 'fst', 'used', 'mac')
local fam, sub, usr, cid, scp, fst, used, mac = r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
if not (fam and sub and cid and scp and fst) then return {'invalid'} end
if cid ~= ARGV[2] then return {'invalid'} end
local fkey = ARGV[1] .. 'rf:' .. fam
if redis.call('EXISTS', fkey) == 0 or redis.call('HEXISTS', fkey, 'rev') == 1 then
  return {'invalid'}
end
local now = tonumber(ARGV[3])
local start = tonumber(fst)
if not start then return {'invalid'} end
local max = tonumber(ARGV[8]) or 0
if max > 0 and now >= start + max then return {'invalid'} end
local mark = redis.call('GET', ARGV[1] .. 'nbf:' .. sub)
if mark then
  local m = tonumber(mark)
  if not m or m >= start then return {'invalid'} end
end
if used then
  local u = tonumber(used)
  local grace = tonumber(ARGV[4])
  if u and grace > 0 and now - u <= grace then return {'grace'} end
  redis.call('HSET', fkey, 'rev', ARGV[3])
  return {'reused', fam, redis.call('TTL', fkey)}
end
local granted = scp
if ARGV[6] == '1' then
  local have = {}
  for s in string.gmatch(scp, '%S+') do have[s] = true end
  for s in string.gmatch(ARGV[7], '%S+') do
    if not have[s] then return {'scope'} end
  end
  granted = ARGV[7]
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('COLLISION refresh token already exists')
end
redis.call('HSET', KEYS[1], 'used', ARGV[3])
redis.call('HSET', KEYS[2], 'fam', fam, 'sub', sub, 'cid', cid, 'scp', scp,
  'iat', ARGV[3], 'fst', fst)
if usr then redis.call('HSET', KEYS[2], 'usr', usr) end
if mac then redis.call('HSET', KEYS[2], 'mac', mac) end
local ttl = tonumber(ARGV[5])
if max > 0 and start + max - now < ttl then ttl = start + max - now end
redis.call('EXPIRE', KEYS[2], ttl)
if redis.call('TTL', fkey) < ttl then redis.call('EXPIRE', fkey, ttl) end
return {'ok', fam, sub, usr or false, scp, granted, fst, mac or false}
