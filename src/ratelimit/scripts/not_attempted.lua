-- Takes back an admitted attempt whose password was never verified (the
-- blocking queue was full, PostgreSQL failed): it was no guess, and must not
-- use up the user's attempts.
--
-- KEYS = the counters counted by admit_login.lua. Returns 1.
for _, k in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', k) or '0')
  if n > 1 then redis.call('DECR', k) elseif n == 1 then redis.call('DEL', k) end
end
return 1
