-- Marks a family revoked (KEYS[1] = family key; ARGV = revoked at, TTL):
-- keeps an earlier revocation time, only ever extends the TTL.
if redis.call('HEXISTS', KEYS[1], 'rev') == 0 then
  redis.call('HSET', KEYS[1], 'rev', ARGV[1])
end
local ttl = tonumber(ARGV[2])
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
