-- Starts a browser session. KEYS[1] = the session's record; ARGV[1] = user
-- id, ARGV[2] = username, ARGV[3] = auth time (unix seconds), ARGV[4] =
-- integrity tag, ARGV[5] = first TTL (seconds: the idle lifetime, or less
-- when the absolute one ends first). Refuses to overwrite (a 256-bit
-- collision means a broken RNG).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('COLLISION session already exists')
end
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'usr', ARGV[2], 'at', ARGV[3], 'mac', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
