-- Stores a new authorization code. KEYS[1] = the record; ARGV[1] = the
-- grant (JSON), ARGV[2] = its integrity tag, ARGV[3] = TTL (seconds).
-- Refuses to overwrite (a 256-bit collision means a broken RNG).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('COLLISION authorization code already exists')
end
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'mac', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
