-- After a successful login: clears the user's counter, and takes the
-- attempt back from the address's (a success is not a failure; an attacker
-- cycling through usernames from one address stays counted).
--
-- KEYS[1] = the user's counter, KEYS[2] = the address's. Returns 1.
redis.call('DEL', KEYS[1])
local i = tonumber(redis.call('GET', KEYS[2]) or '0')
if i > 1 then redis.call('DECR', KEYS[2]) elseif i == 1 then redis.call('DEL', KEYS[2]) end
return 1
