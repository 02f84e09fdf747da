-- Revokes the family of a record. KEYS[1] = record; ARGV = prefix, check
-- client ("1"/"0"), client id, now. Nil when the record is unknown or
-- bound to another client; else `{family, family ttl}`. The family key is
-- kept at least as long as the record.
local r = redis.call('HMGET', KEYS[1], 'fam', 'cid')
if not r[1] then return false end
if ARGV[2] == '1' and r[2] ~= ARGV[3] then return false end
local fkey = ARGV[1] .. 'rf:' .. r[1]
if redis.call('HEXISTS', fkey, 'rev') == 0 then redis.call('HSET', fkey, 'rev', ARGV[4]) end
local rttl = redis.call('TTL', KEYS[1])
local fttl = redis.call('TTL', fkey)
if rttl > 0 and fttl < rttl then
  redis.call('EXPIRE', fkey, rttl)
  fttl = rttl
end
return {r[1], fttl}
