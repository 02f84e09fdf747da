-- POST /oauth/token grant_type=password over the benchmark users (round
-- robin), the client of client.txt authenticated with HTTP Basic. Bound by
-- argon2id in the blocking pool. Counts the responses by status; done()
-- prints them ("status counts: 200=N 503=M") on stderr.
--   wrk -t1 -c64 -d10s -s bench/login.lua http://127.0.0.1:8080
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local reqs, n, i = {}, 0, 0

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  local basic = B.client_basic()
  for k, line in ipairs(B.read_lines(B.path("TOKEND_BENCH_USERS", "users.txt"))) do
    local user, pw = line:match("^(%S+)%s+(.+)$")
    reqs[k] = B.form_post("/oauth/token", basic,
      "grant_type=password&username=" .. B.urlencode(user) .. "&password=" .. B.urlencode(pw))
  end
  n = #reqs
  i = ((id or 0) * 7919) % n
end)

function request()
  i = i % n + 1
  return reqs[i]
end

function response(status, headers, body)
  B.count_status(status)
end

done = B.protect("done", function(summary, latency, requests)
  B.print_status_counts(B.threads)
end)
