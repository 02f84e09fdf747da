-- Redeems an authorization code, once. KEYS[1] = the code's record,
-- KEYS[2] = its "used" marker; ARGV[1] = the marker's TTL (seconds),
-- ARGV[2] = now (unix seconds), ARGV[3] = the key prefix.
--
-- A live record is deleted and the marker written in the same step, so two
-- racing redemptions cannot both see it: returns {'ok', grant, mac}.
-- A code already redeemed (the marker exists): the marker is flagged
-- revoked (`rev`), the refresh family bound to it, if any, is revoked
-- (`{prefix}rf:{family}` gets `rev`, as refresh/scripts/revoke.lua does),
-- and {'reused', jti or nil, access expiry or nil, family or nil} is
-- returned for the caller to revoke the access token and record both
-- durably (RFC 6749 §4.1.2). Otherwise {'invalid'}.
local g = redis.call('HMGET', KEYS[1], 'g', 'mac')
if g[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'at', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return {'ok', g[1], g[2] or false}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HEXISTS', KEYS[2], 'rev') == 0 then
    redis.call('HSET', KEYS[2], 'rev', ARGV[2])
  end
  local u = redis.call('HMGET', KEYS[2], 'jti', 'exp', 'fam')
  if u[3] then
    local fkey = ARGV[3] .. 'rf:' .. u[3]
    if redis.call('EXISTS', fkey) == 1 and redis.call('HEXISTS', fkey, 'rev') == 0 then
      redis.call('HSET', fkey, 'rev', ARGV[2])
    end
  end
  return {'reused', u[1] or false, u[2] or false, u[3] or false}
end
return {'invalid'}
