-- Counts one failed login against every counter in KEYS; a counter's
-- window (ARGV[1] seconds) starts at its first failure. Returns 1.
for _, k in ipairs(KEYS) do
  if redis.call('INCR', k) == 1 then redis.call('EXPIRE', k, ARGV[1]) end
end
return 1
