-- POST /oauth/introspect (RFC 7662) with the benchmark users' access tokens,
-- round robin, the client of client.txt authenticated with HTTP Basic.
--   wrk -t1 -c64 -d10s -s bench/introspect.lua http://127.0.0.1:8080
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local reqs, n, i = {}, 0, 0

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  local basic = B.client_basic()
  local tokens = B.read_lines(B.path("TOKEND_BENCH_TOKENS", "tokens.txt"))
  for k, t in ipairs(tokens) do
    reqs[k] = B.form_post("/oauth/introspect", basic, "token=" .. B.urlencode(t))
  end
  n = #reqs
  i = ((id or 0) * 7919) % n
end)

function request()
  i = i % n + 1
  return reqs[i]
end
