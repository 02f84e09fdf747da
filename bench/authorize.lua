-- GET /authorize (RFC 6749 §4.1.1) by a browser that is already signed in:
-- the session cookie of web.txt (single sign-on), so every request is
-- answered with a 303 to the app's redirect URI carrying a new code, and no
-- password is checked. Each code in a Location header is kept and, at the
-- end, written to codes.txt for bench/authorization_code.lua, which must
-- run within oauth.code_ttl (60 s by default) of this script.
--   wrk -t1 -c64 -d10s -s bench/authorize.lua http://127.0.0.1:8080
-- With -tN set TOKEND_BENCH_THREADS=N. Runs unchanged under wrk2.
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local req

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  local w = B.web()
  B.pool_init(id, "TOKEND_BENCH_CODES", "codes.txt", true)
  req = wrk.format("GET", "/authorize?response_type=code&client_id=" .. B.urlencode(w.client_id)
    .. "&redirect_uri=" .. B.urlencode(w.redirect_uri) .. "&scope=openid%20read&state=bench"
    .. "&code_challenge=" .. w.challenge .. "&code_challenge_method=S256",
    { ["Cookie"] = w.cookie })
end)

function request()
  return req
end

function response(status, headers, body)
  B.count_status(status)
  local location = headers["Location"] or headers["location"]
  local code = location and location:match("[?&]code=([^&]+)")
  if code then B.pool_push(code) end
end

done = B.protect("done", function(summary, latency, requests)
  B.save_pool(B.threads, "TOKEND_BENCH_CODES", "codes.txt", "code")
  B.print_status_counts(B.threads)
end)
