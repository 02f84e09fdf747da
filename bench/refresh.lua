-- POST /oauth/token grant_type=refresh_token. Every request presents a
-- refresh token that was never presented before: the pool starts from
-- refresh.txt, each response's new refresh_token is queued for reuse, and no
-- token is ever sent twice (a reuse would revoke the family, RFC 9700). At
-- the end the unused tokens are written back to refresh.txt for the next run.
--   wrk -t1 -c64 -d10s -s bench/refresh.lua http://127.0.0.1:8080
-- With -tN set TOKEND_BENCH_THREADS=N. Needs fewer connections than tokens.
-- When the pool is empty (more requests in flight than tokens, or failed
-- refreshes) the request goes to /healthz instead and is counted in "starved".
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local basic, starved_req

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  basic = B.client_basic()
  B.pool_init(id)
  starved_req = wrk.format("GET", "/healthz")
end)

function request()
  local t = B.pool_take()
  if not t then
    starved = starved + 1
    return starved_req
  end
  return B.form_post("/oauth/token", basic, "grant_type=refresh_token&refresh_token=" .. B.urlencode(t))
end

function response(status, headers, body)
  B.count_status(status)
  B.pool_feed(body)
end

done = B.protect("done", function(summary, latency, requests)
  B.save_pool(B.threads)
  B.print_status_counts(B.threads)
end)
