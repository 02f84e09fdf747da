-- POST /oauth/token grant_type=authorization_code (RFC 6749 §4.1.3) with the
-- PKCE code_verifier (RFC 7636 §4.5), by the confidential client of web.txt
-- (HTTP Basic): each request redeems a code of codes.txt, made just before
-- by bench/authorize.lua, once. With the `openid` scope every answer holds
-- two signed JWTs (the access token and the ID token) and a refresh token.
--   wrk -t1 -c64 -d10s -s bench/authorization_code.lua http://127.0.0.1:8080
-- With -tN set TOKEND_BENCH_THREADS=N. When the codes run out the request
-- goes to /healthz instead and is counted in "starved" (a code is never
-- sent twice: a reuse would revoke what it gave, RFC 6749 §4.1.2).
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local basic, prefix, starved_req

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  local w = B.web()
  basic = "Basic " .. B.base64(B.urlencode(w.client_id) .. ":" .. B.urlencode(w.client_secret))
  prefix = "grant_type=authorization_code&redirect_uri=" .. B.urlencode(w.redirect_uri)
    .. "&code_verifier=" .. w.verifier .. "&code="
  B.pool_init(id, "TOKEND_BENCH_CODES", "codes.txt")
  starved_req = wrk.format("GET", "/healthz")
end)

function request()
  local code = B.pool_take()
  if not code then
    starved = starved + 1
    return starved_req
  end
  return B.form_post("/oauth/token", basic, prefix .. code)
end

function response(status, headers, body)
  B.count_status(status)
end

done = B.protect("done", function(summary, latency, requests)
  B.save_pool(B.threads, "TOKEND_BENCH_CODES", "codes.txt", "code")
  B.print_status_counts(B.threads)
end)
