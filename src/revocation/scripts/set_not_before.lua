-- Sets a user's "not before" mark, never lowering a later one, and logs a
-- change for the mirrors.
--
-- KEYS[1] = the mark's key, KEYS[2] = `{prefix}revlog:seq`, KEYS[3] =
-- `{prefix}revlog`; ARGV[1] = the mark (unix seconds); ARGV[2] = TTL in
-- seconds; ARGV[3] = the user's `sub`; ARGV[4] = the stream's approximate
-- length cap. A later existing mark is kept (and its TTL only ever
-- extended), so two racing logouts, or a retried one, can never re-validate
-- tokens. A value that is not a number is overwritten. Returns
-- `{mark in force, sequence number of the stream entry or 0 if none}`.
local new = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur ~= nil and cur >= new then
  local left = redis.call('TTL', KEYS[1])
  if left >= 0 and left < ttl then
    redis.call('EXPIRE', KEYS[1], ttl)
  end
  return {cur, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 's', seq, 't', 'nbf', 'k', ARGV[3], 'v', ARGV[1])
return {new, seq}
