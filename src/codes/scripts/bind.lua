-- Binds what was issued from a redeemed code to its "used" marker, so that
-- a second redemption can revoke it. KEYS[1] = the marker; ARGV[1] = the
-- access token's jti, ARGV[2] = its expiry (unix seconds), ARGV[3] = the
-- refresh family ('' when none), ARGV[4] = the key prefix, ARGV[5] = now.
--
-- Returns 'ok'; or 'revoked' when a second redemption came between the
-- redemption and this call (the marker carries `rev`): the family is then
-- revoked here and the caller revokes the access token it just signed.
-- A marker that is gone (it outlived its TTL: cannot happen within the
-- code's lifetime) is 'ok': nothing is left to protect.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'ok' end
if redis.call('HEXISTS', KEYS[1], 'rev') == 1 then
  if ARGV[3] ~= '' then
    local fkey = ARGV[4] .. 'rf:' .. ARGV[3]
    if redis.call('EXISTS', fkey) == 1 and redis.call('HEXISTS', fkey, 'rev') == 0 then
      redis.call('HSET', fkey, 'rev', ARGV[5])
    end
  end
  return 'revoked'
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'jti', ARGV[1], 'exp', ARGV[2], 'fam', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'jti', ARGV[1], 'exp', ARGV[2])
end
return 'ok'
