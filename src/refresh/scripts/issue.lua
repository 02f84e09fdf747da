-- Issues a new family. KEYS[1] = record, KEYS[2] = family. ARGV = family
-- id, sub, client id, scope, now, ttl, has username ("1"/"0"), username,
-- the record's integrity tag (computed by tokend; see refresh/mod.rs).
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('COLLISION refresh token or family already exists')
end
redis.call('HSET', KEYS[2], 'fst', ARGV[5], 'sub', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'fam', ARGV[1], 'sub', ARGV[2], 'cid', ARGV[3], 'scp', ARGV[4],
    'iat', ARGV[5], 'fst', ARGV[5], 'usr', ARGV[8], 'mac', ARGV[9])
else
  redis.call('HSET', KEYS[1], 'fam', ARGV[1], 'sub', ARGV[2], 'cid', ARGV[3], 'scp', ARGV[4],
    'iat', ARGV[5], 'fst', ARGV[5], 'mac', ARGV[9])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
