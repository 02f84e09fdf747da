-- Sets the marker if the re-seed was not interrupted. KEYS = seeding key,
-- marker key; ARGV[1] = our id. 1 when set, 0 when interrupted.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
