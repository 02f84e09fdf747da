-- POST /oauth/token with grant_type=client_credentials (RFC 6749 §4.4), the
-- client of client.txt authenticated with HTTP Basic: one access token
-- signed per request, no store touched.
--   wrk -t1 -c64 -d10s -s bench/client_credentials.lua http://127.0.0.1:8080
-- Runs unchanged under wrk2 (add -R RATE).
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local req

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  req = B.form_post("/oauth/token", B.client_basic(), "grant_type=client_credentials&scope=read")
end)

function request()
  return req
end
