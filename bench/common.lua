-- Shared helpers of the tokend wrk/wrk2 scripts (plain Lua 5.1 / LuaJIT, no
-- modules). Loaded with dofile() from the script's own directory, so the
-- scripts run from any working directory:
--   wrk -t1 -c64 -d10s -s bench/validate.lua http://127.0.0.1:8080
-- Input files (written by bench/run.sh; each overridable by an env variable):
--   TOKEND_BENCH_TOKENS   access tokens, one a line   (bench/results/tokens.txt)
--   TOKEND_BENCH_REFRESH  refresh tokens, one a line  (bench/results/refresh.txt)
--   TOKEND_BENCH_USERS    "username password" lines   (bench/results/users.txt)
--   TOKEND_BENCH_CLIENT   client_id, then client_secret on the next line
--                                                     (bench/results/client.txt)
--   TOKEND_BENCH_WEB      the browser app and its session (M.web)
--                                                     (bench/results/web.txt)
--   TOKEND_BENCH_CODES    authorization codes, one a line (bench/results/codes.txt)
--   TOKEND_BENCH_THREADS  the -t given to wrk, for scripts that split a pool
--                         of single-use values between threads (1)
--
-- wrk2 (giltene/wrk2, based on wrk 4.0's scripting) runs these scripts too,
-- with two differences they work around:
--   - it runs setup/init/request/response/done with lua_pcall and ignores
--     their errors, so a failing init would go unnoticed (requests would be
--     garbage): init and done are wrapped in M.protect, which prints the
--     error and exits;
--   - its thread:get() copies a table with keys and values swapped
--     (script_copy_value pushes the value before the key), so no table
--     crosses threads here as is: M.save_pool accepts both orientations and
--     status counts travel as one number per status (M.count_status).
local M = {}

-- Wraps a hook so that an error ends wrk/wrk2 with a message instead of
-- being ignored (wrk2) or aborting without context.
function M.protect(name, f)
  return function(...)
    local ok, err = pcall(f, ...)
    if not ok then
      io.stderr:write("bench script error in ", name, "(): ", tostring(err), "\n")
      io.stderr:flush()
      os.exit(2)
    end
  end
end

M.dir = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")

function M.path(env, default)
  local p = os.getenv(env)
  if p and p ~= "" then return p end
  return M.dir .. "results/" .. default
end

function M.read_lines(path)
  local f, err = io.open(path, "r")
  if not f then error("cannot open " .. path .. ": " .. tostring(err)) end
  local lines = {}
  for line in f:lines() do
    line = line:gsub("%s+$", "")
    if line ~= "" then lines[#lines + 1] = line end
  end
  f:close()
  if #lines == 0 then error(path .. " is empty") end
  return lines
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=")
      .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- application/x-www-form-urlencoded value
function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

-- "Basic …" for the client in client.txt (RFC 6749 §2.3.1: id and secret
-- are form-encoded before base64).
function M.client_basic()
  local c = M.read_lines(M.path("TOKEND_BENCH_CLIENT", "client.txt"))
  if not c[2] then error("client.txt needs two lines: client_id and client_secret") end
  return "Basic " .. M.base64(M.urlencode(c[1]) .. ":" .. M.urlencode(c[2]))
end

-- The browser app of web.txt (bench/prepare.py web), one value a line:
-- client_id, client_secret, redirect_uri, PKCE code_verifier, its S256
-- code_challenge, and the signed-in browser's session cookie (name=value).
function M.web()
  local l = M.read_lines(M.path("TOKEND_BENCH_WEB", "web.txt"))
  if not l[6] then error("web.txt needs six lines (bench/prepare.py web writes it)") end
  return { client_id = l[1], client_secret = l[2], redirect_uri = l[3],
           verifier = l[4], challenge = l[5], cookie = l[6] }
end

-- Precomputed requests for round robin: entry k is `depth` requests of
-- `one` (from k on, wrapping), concatenated, so that request() only indexes
-- a table and wrk spends its time on I/O. depth 1 is one request each.
function M.pipelined(one, depth)
  local reqs, n = {}, #one
  for k = 1, n do
    local parts = {}
    for d = 0, depth - 1 do parts[#parts + 1] = one[((k - 1 + d) % n) + 1] end
    reqs[k] = table.concat(parts)
  end
  return reqs
end

function M.form_post(path, basic, body)
  return wrk.format("POST", path, {
    ["Authorization"] = basic,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end

-- A FIFO of single-use values (refresh tokens, authorization codes), split
-- between wrk threads so no two threads ever hold the same value. Each value
-- is taken once; new ones are queued with M.pool_push (refresh tokens seen in
-- response bodies: M.pool_feed). done() writes the unused ones back to the
-- pool file (M.save_pool), so the next run starts from values that were
-- never presented.
--   env, default: the pool file (M.path); refresh.txt when not given
--   empty:        start with an empty pool (the file is only written)
function M.pool_init(id, env, default, empty)
  local threads = tonumber(os.getenv("TOKEND_BENCH_THREADS") or "1") or 1
  id = id or 0
  if id >= threads then
    error("wrk runs more threads than TOKEND_BENCH_THREADS=" .. threads ..
          "; set it to wrk's -t so the pool of single-use values is split without overlap")
  end
  local q = {}
  if not empty then
    local all = M.read_lines(M.path(env or "TOKEND_BENCH_REFRESH", default or "refresh.txt"))
    for i = 1, #all do
      if (i - 1) % threads == id then q[#q + 1] = all[i] end
    end
  end
  pool, pool_head, pool_tail = q, 1, #q + 1  -- globals: read by done()
  starved = 0
end

function M.pool_take()
  if pool_head >= pool_tail then return nil end
  local t = pool[pool_head]
  pool[pool_head] = nil
  pool_head = pool_head + 1
  return t
end

function M.pool_push(t)
  pool[pool_tail] = t
  pool_tail = pool_tail + 1
end

-- Queues the refresh_token of a token response's body, if it has one.
function M.pool_feed(body)
  if body then
    local t = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if t then M.pool_push(t) end
  end
end

-- Runs in done(): collects each thread's unused values and rewrites the pool
-- file (atomically, through a temporary file). env and default as for
-- M.pool_init; label names the pool in the line printed on stderr, which
-- bench/prepare.py reads ("refresh" when not given).
function M.save_pool(threads, env, default, label)
  local path = M.path(env or "TOKEND_BENCH_REFRESH", default or "refresh.txt")
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  local kept, starved_total = 0, 0
  for _, t in ipairs(threads) do
    local q, h, tail = t:get("pool"), t:get("pool_head"), t:get("pool_tail")
    starved_total = starved_total + (t:get("starved") or 0)
    if q and h and tail then
      -- wrk copies the pool as index -> token, wrk2 as token -> index.
      local items = {}
      for k, v in pairs(q) do
        local i, tok = k, v
        if type(k) == "string" then i, tok = v, k end
        if type(i) == "number" and type(tok) == "string" and i >= h and i < tail then
          items[#items + 1] = { i, tok }
        end
      end
      table.sort(items, function(a, b) return a[1] < b[1] end)
      for _, it in ipairs(items) do
        f:write(it[2], "\n")
        kept = kept + 1
      end
    end
  end
  f:close()
  assert(os.rename(tmp, path))
  io.stderr:write(string.format("%s pool: %d unused kept in %s; %d requests found the pool empty\n",
    label or "refresh", kept, path, starved_total))
end

-- HTTP status counts, one global number per status in each thread
-- ("status_200", …): numbers cross threads the same way under wrk and wrk2.
local status_names = {}
function M.count_status(status)
  local name = status_names[status]
  if not name then
    name = "status_" .. status
    status_names[status] = name
  end
  _G[name] = (_G[name] or 0) + 1
end

-- Runs in done(): prints "status counts: 200=N 503=M" (all threads) on
-- stderr, where bench/prepare.py reads it.
function M.print_status_counts(threads)
  local parts = {}
  for code = 100, 599 do
    local n = 0
    for _, t in ipairs(threads) do n = n + (t:get("status_" .. code) or 0) end
    if n > 0 then parts[#parts + 1] = string.format("%d=%d", code, n) end
  end
  io.stderr:write("status counts: ", table.concat(parts, " "), "\n")
end

-- setup() for every script: numbers the threads, remembers them for done().
M.threads = {}
function M.setup(thread)
  thread:set("id", #M.threads)
  M.threads[#M.threads + 1] = thread
end

return M
