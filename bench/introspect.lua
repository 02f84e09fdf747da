-- POST /oauth/introspect (RFC 7662) with the benchmark users' access tokens,
-- round robin, the client of client.txt authenticated with HTTP Basic.
--   wrk -t1 -c64 -d10s -s bench/introspect.lua http://127.0.0.1:8080 [-- 16]
-- The optional argument is the pipelining depth: that many requests (with
-- consecutive tokens) are written at once per connection. Runs unchanged
-- under wrk2 (add -R RATE).
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local reqs, n, i = {}, 0, 0

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  local depth = tonumber(args[1] or "1") or 1
  local basic = B.client_basic()
  local tokens = B.read_lines(B.path("TOKEND_BENCH_TOKENS", "tokens.txt"))
  local one = {}
  for k, t in ipairs(tokens) do
    one[k] = B.form_post("/oauth/introspect", basic, "token=" .. B.urlencode(t))
  end
  reqs = B.pipelined(one, depth)
  n = #reqs
  i = ((id or 0) * 7919) % n
end)

function request()
  i = i % n + 1
  return reqs[i]
end
