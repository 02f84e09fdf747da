-- Re-applies one access revocation during a reconciliation with
-- PostgreSQL: sets it only where Redis lacks it, and then logs it for the
-- mirrors; a revocation Redis kept is left as it is, unlogged (so that a
-- reconciliation of thousands of revocations writes to the stream only what
-- it repaired).
--
-- KEYS and ARGV as revoke_access.lua: KEYS[1] = `{prefix}rev:at:{jti}`,
-- KEYS[2] = `{prefix}revlog:seq`, KEYS[3] = `{prefix}revlog`; ARGV[1] = TTL
-- in seconds, ARGV[2] = the jti, ARGV[3] = the stream's approximate length
-- cap. Returns 1 when it was missing (and is now set), else 0.
if not redis.call('SET', KEYS[1], '1', 'EX', ARGV[1], 'NX') then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 's', seq, 't', 'at', 'k', ARGV[2], 'v', ARGV[1])
return 1
