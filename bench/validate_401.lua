-- GET /validate that must be refused with 401: the path of anonymous
-- traffic a forward-auth proxy sends (no Authorization header), or, with the
-- argument `malformed`, a bearer value that is not a JWT.
--   wrk -t1 -c64 -d10s -s bench/validate_401.lua http://127.0.0.1:8080 [-- malformed]
-- Runs unchanged under wrk2 (add -R RATE).
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local req

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  if args[1] == "malformed" then
    req = wrk.format("GET", "/validate", { ["Authorization"] = "Bearer not-a-jwt" })
  else
    req = wrk.format("GET", "/validate")
  end
end)

function request()
  return req
end
