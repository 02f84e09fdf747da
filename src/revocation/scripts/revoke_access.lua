-- Revokes one access token and logs it for the mirrors.
--
-- KEYS[1] = `{prefix}rev:at:{jti}`, KEYS[2] = `{prefix}revlog:seq`,
-- KEYS[3] = `{prefix}revlog`; ARGV[1] = TTL in seconds, ARGV[2] = the jti,
-- ARGV[3] = the stream's approximate length cap. Returns the entry's
-- sequence number (see mirror.rs).
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 's', seq, 't', 'at', 'k', ARGV[2], 'v', ARGV[1])
return seq
