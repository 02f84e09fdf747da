-- A mix of 95% validate, 4% refresh, 1% login, interleaved deterministically
-- (in every 100 requests: 1 login, 4 refreshes, 95 validations). Refresh
-- tokens are single-use as in refresh.lua (logins' refresh tokens join the
-- pool too; unused ones are written back to refresh.txt at the end).
--   wrk -t1 -c64 -d10s -s bench/mixed.lua http://127.0.0.1:8080
--   wrk2 -t1 -c64 -d10s -R 20000 --latency -s bench/mixed.lua http://127.0.0.1:8080
-- With -tN set TOKEND_BENCH_THREADS=N.
local B = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local basic, validate, login, nv, nl, iv, il, k = nil, {}, {}, 0, 0, 0, 0, 0

function setup(thread) B.setup(thread) end

init = B.protect("init", function(args)
  basic = B.client_basic()
  for j, t in ipairs(B.read_lines(B.path("TOKEND_BENCH_TOKENS", "tokens.txt"))) do
    validate[j] = wrk.format("GET", "/validate", { ["Authorization"] = "Bearer " .. t })
  end
  for j, line in ipairs(B.read_lines(B.path("TOKEND_BENCH_USERS", "users.txt"))) do
    local user, pw = line:match("^(%S+)%s+(.+)$")
    login[j] = B.form_post("/oauth/token", basic,
      "grant_type=password&username=" .. B.urlencode(user) .. "&password=" .. B.urlencode(pw))
  end
  nv, nl = #validate, #login
  iv = ((id or 0) * 7919) % nv
  il = ((id or 0) * 7919) % nl
  B.pool_init(id)
end)

local function next_validate()
  iv = iv % nv + 1
  return validate[iv]
end

function request()
  k = k % 100 + 1
  if k == 50 then
    il = il % nl + 1
    return login[il]
  elseif k % 25 == 0 then  -- 25, 75, 100 and (k == 50 taken above) 12 below
    local t = B.pool_take()
    if t then
      return B.form_post("/oauth/token", basic, "grant_type=refresh_token&refresh_token=" .. B.urlencode(t))
    end
    starved = starved + 1
  elseif k == 12 then
    local t = B.pool_take()
    if t then
      return B.form_post("/oauth/token", basic, "grant_type=refresh_token&refresh_token=" .. B.urlencode(t))
    end
    starved = starved + 1
  end
  return next_validate()
end

function response(status, headers, body)
  B.count_status(status)
  if #body > 0 then B.pool_feed(body) end
end

done = B.protect("done", function(summary, latency, requests)
  B.save_pool(B.threads)
  B.print_status_counts(B.threads)
end)
