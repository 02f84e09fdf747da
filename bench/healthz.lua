-- GET /healthz: the server's own baseline (no store, no allocation).
-- Runs under wrk and wrk2 unchanged:  wrk -t1 -c64 -d10s -s bench/healthz.lua http://127.0.0.1:8080
-- Optional pipelining: append `-- 16` to send 16 requests per write.
local depth = 1

function init(args)
  depth = tonumber(args[1] or "1") or 1
  local one = wrk.format("GET", "/healthz")
  req = string.rep(one, depth)
end

function request()
  return req
end
