#!/usr/bin/env python3
"""Helpers of bench/run.sh (python3 standard library only).

  prepare.py tokens  URL RESULTS_DIR [WORKERS]
      Logs every user of users.txt in once (password grant, concurrent
      http.client connections) and writes tokens.txt (access tokens) and
      refresh.txt (refresh tokens), one a line.
  prepare.py web     URL RESULTS_DIR REDIRECT_URI
      Signs the first user of users.txt in through the sign-in page, as the
      client of RESULTS_DIR/web-client.json, and writes web.txt (the
      browser app, a PKCE pair, the session cookie) for authorize.lua and
      authorization_code.lua.
  prepare.py argon2  URL RESULTS_DIR N
      N sequential logins on one connection against a tokend whose blocking
      pool has ONE thread: logins/s approximates argon2id's single-thread
      verify rate with the configured parameters (it also includes one
      PostgreSQL lookup, the HTTP exchange and signing, so it slightly
      under-states the pure hash rate). Prints JSON.
  prepare.py report  RESULTS_DIR
      Parses the raw wrk / wrk2 / oha outputs listed in
      RESULTS_DIR/raw/index.tsv (with each one's stderr, FILE.err, where the
      Lua scripts print status counts), RESULTS_DIR/raw/meta.json and
      RESULTS_DIR/raw/connections.json (bench/hold_connections.py) into
      latest.json and summary.md.
  prepare.py brief   wrk|wrk2|oha|hold|callgrind FILE
      One line about one raw output, for bench/run.sh's progress messages.
  prepare.py instructions FILE
      The instructions-per-request table from bench/callgrind.py's JSON
      lines (FILE), as summary.md shows it.
"""
import base64
import concurrent.futures
import http.client
import json
import os
import re
import statistics
import sys
import threading
import time
import urllib.parse


def read_lines(path):
    with open(path) as f:
        return [l.strip() for l in f if l.strip()]


def client_basic(results):
    cid, secret = read_lines(os.path.join(results, "client.txt"))[:2]
    raw = urllib.parse.quote(cid, safe="") + ":" + urllib.parse.quote(secret, safe="")
    return "Basic " + base64.b64encode(raw.encode()).decode()


_local = threading.local()


def login(host, port, basic, user, pw):
    for attempt in range(5):
        conn = getattr(_local, "conn", None)
        if conn is None:
            conn = _local.conn = http.client.HTTPConnection(host, port, timeout=30)
        body = urllib.parse.urlencode({"grant_type": "password", "username": user, "password": pw})
        try:
            conn.request("POST", "/oauth/token", body, {
                "Authorization": basic,
                "Content-Type": "application/x-www-form-urlencoded",
            })
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            _local.conn = None
            continue
        if resp.status == 200:
            j = json.loads(data)
            return j["access_token"], j["refresh_token"]
        if resp.status == 503:  # blocking pool full: wait and retry
            time.sleep(0.05 * (attempt + 1))
            continue
        raise SystemExit(f"login of {user} failed: {resp.status} {data[:200]!r}")
    raise SystemExit(f"login of {user} failed 5 times")


def cmd_tokens(url, results, workers="8"):
    u = urllib.parse.urlsplit(url)
    basic = client_basic(results)
    users = [l.split(None, 1) for l in read_lines(os.path.join(results, "users.txt"))]
    with concurrent.futures.ThreadPoolExecutor(int(workers)) as ex:
        pairs = list(ex.map(lambda up: login(u.hostname, u.port, basic, up[0], up[1]), users))
    with open(os.path.join(results, "tokens.txt"), "w") as f:
        f.writelines(a + "\n" for a, _ in pairs)
    with open(os.path.join(results, "refresh.txt"), "w") as f:
        f.writelines(r + "\n" for _, r in pairs)
    print(f"{len(pairs)} users logged in: tokens.txt and refresh.txt written", file=sys.stderr)


def cmd_argon2(url, results, n):
    u = urllib.parse.urlsplit(url)
    basic = client_basic(results)
    users = [l.split(None, 1) for l in read_lines(os.path.join(results, "users.txt"))]
    n = int(n)
    login(u.hostname, u.port, basic, *users[-1])  # warm-up: connection, pools
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        login(u.hostname, u.port, basic, *users[i % len(users)])
        times.append(time.perf_counter() - t0)
    total = sum(times)
    print(json.dumps({
        "method": "sequential password-grant logins on one connection, tokend with "
                  "limits.blocking_threads=1 pinned to CPU 0; each login = one argon2id "
                  "verify + one PostgreSQL lookup + HTTP + JWT signing",
        "logins": n,
        "seconds": round(total, 3),
        "hashes_per_second": round(n / total, 2),
        "median_ms": round(statistics.median(times) * 1000, 2),
    }))


def cmd_web(url, results, redirect_uri):
    """Signs one user of users.txt in through the sign-in page, as a browser
    would (GET /authorize, then the form's POST /login with its pre-session
    cookie), and writes web.txt for bench/authorize.lua and
    bench/authorization_code.lua: the client (of web-client.json, `tokend
    client add --json`'s output), its redirect URI, a PKCE verifier and its
    S256 challenge, and the browser session's cookie."""
    import hashlib
    import html
    import secrets
    with open(os.path.join(results, "web-client.json")) as f:
        client = json.load(f)
    client_id, client_secret = client["client_id"], client["client_secret"]
    u = urllib.parse.urlsplit(url)
    user, pw = read_lines(os.path.join(results, "users.txt"))[0].split(None, 1)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": "openid read", "state": "bench", "code_challenge": challenge,
        "code_challenge_method": "S256",
    }, quote_via=urllib.parse.quote)

    def cookie_of(resp):
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                yield value.split(";", 1)[0]

    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/authorize?" + query)
    resp = conn.getresponse()
    page = resp.read().decode()
    if resp.status != 200:
        raise SystemExit(f"GET /authorize: {resp.status} {page[:300]!r}")
    login_cookie = next(cookie_of(resp), None)
    fields = dict((n, html.unescape(v)) for n, v in
                  re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    if not login_cookie or "request" not in fields or "csrf_token" not in fields:
        raise SystemExit("GET /authorize: no sign-in form or no pre-session cookie")
    body = urllib.parse.urlencode(dict(fields, username=user, password=pw))
    conn.request("POST", "/login", body, {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie})
    resp = conn.getresponse()
    resp.read()
    session = next((c for c in cookie_of(resp) if c.split("=", 1)[0].endswith("tokend_session")), None)
    if resp.status != 303 or not session:
        raise SystemExit(f"POST /login: {resp.status}, session cookie {'set' if session else 'missing'}")
    path = os.path.join(results, "web.txt")
    with open(path, "w") as f:
        f.write("\n".join([client_id, client_secret, redirect_uri, verifier, challenge, session]) + "\n")
    os.chmod(path, 0o600)
    print(f"{user} signed in through the sign-in page: web.txt written", file=sys.stderr)


# ---------------------------------------------------------------- report

def parse_duration_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def read_out(path):
    """A raw output and its stderr (path + ".err") when there is one."""
    with open(path) as f:
        text = f.read()
    if os.path.exists(path + ".err"):
        with open(path + ".err") as f:
            text += "\n" + f.read()
    return text


def parse_status_counts(text):
    """'status counts: 200=N 503=M' printed by the Lua scripts' done()."""
    m = re.search(r"^status counts:(.*)$", text, re.M)
    if not m:
        return None
    return {k: int(v) for k, v in re.findall(r"(\d{3})=(\d+)", m.group(1))}


def parse_wrk(text):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", text)
    r["requests"] = int(m.group(1)) if m else None
    r["runtime_s"] = parse_duration_ms(m.group(2)) / 1000 if m and parse_duration_ms(m.group(2)) else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    # connect + read + write; wrk's and wrk2's "timeout" counts connections
    # whose request was older than 2 s at a check (wrk2 counts idle ones too).
    r["errors"] = sum(int(x) for x in m.groups()[:3]) if m else 0
    r["timeouts"] = int(m.group(4)) if m else 0
    codes = parse_status_counts(text)
    if codes is not None:
        r["status_counts"] = codes
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["latency_avg_ms"] = parse_duration_ms(m.group(1))
        r["latency_max_ms"] = parse_duration_ms(m.group(3))
    # wrk --latency / wrk2 --latency percentile lines: "  99.000%    1.23ms"
    # (wrk prints "99%"), unless "Detailed Percentile spectrum" follows.
    head = text.split("Detailed Percentile spectrum")[0]
    pct = {}
    for p, v in re.findall(r"^\s+([\d.]+)%\s+(\S+)\s*$", head, re.M):
        ms = parse_duration_ms(v)
        if ms is not None:
            pct[float(p)] = ms
    for name, p in (("p50_ms", 50.0), ("p99_ms", 99.0), ("p999_ms", 99.9)):
        if p in pct:
            r[name] = pct[p]
    # wrk2 -U also prints the latencies measured from the actual send, not
    # from the time the request should have been sent.
    m = re.search(r"Uncorrected Latency[^\n]*\n(.*?)Detailed Percentile spectrum", text, re.S)
    if m:
        upct = {float(p): parse_duration_ms(v)
                for p, v in re.findall(r"^\s+([\d.]+)%\s+(\S+)\s*$", m.group(1), re.M)}
        for name, p in (("uncorrected_p50_ms", 50.0), ("uncorrected_p99_ms", 99.0),
                        ("uncorrected_p999_ms", 99.9)):
            if upct.get(p) is not None:
                r[name] = upct[p]
    m = re.search(r"\w+ pool: (\d+) unused (?:tokens )?kept in \S+; (\d+) requests found", text)
    if m:
        r["pool_left"], r["starved"] = int(m.group(1)), int(m.group(2))
    return r


def parse_oha(text):
    j = json.loads(text)
    s = j.get("summary", {})
    pct = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {})
    errors = j.get("errorDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    return {
        "rps": s.get("requestsPerSec"),
        "p50_ms": pct.get("p50", 0) * 1000 if pct.get("p50") is not None else None,
        "p99_ms": pct.get("p99", 0) * 1000 if pct.get("p99") is not None else None,
        "p999_ms": pct.get("p99.9", 0) * 1000 if pct.get("p99.9") is not None else None,
        "ok": ok,
        "non_2xx": sum(v for k, v in codes.items() if not str(k).startswith("2")),
        # -w makes oha wait for requests in flight at the deadline; any
        # "aborted due to deadline" left is not a server error.
        "errors": sum(v for k, v in errors.items() if "deadline" not in k),
        "error_kinds": errors,
        "status_counts": {str(k): v for k, v in codes.items()},
    }


def parse_any(tool, path):
    text = read_out(path) if tool != "oha" else open(path).read()
    if tool == "oha":
        return dict(parse_oha(text), tool="oha")
    return dict(parse_wrk(text), tool=tool)


def cmd_brief(tool, path):
    try:
        if tool == "callgrind":
            print(", ".join(f"{c['scenario']} {c['serving_thread']:,}" for c in read_callgrind(path)))
            return
        if tool == "hold":
            h = json.load(open(path))
            st = h.get("settled", {})
            print(f"{h.get('connections_answered')} of {h.get('connections_requested')} answered "
                  f"{h.get('status_counts')}, {h.get('still_open_after_settle')} still open; tokend VmRSS "
                  f"{st.get('vmrss_kib', 0) / 1024:.1f} MiB with them (before: "
                  f"{h.get('before', {}).get('vmrss_kib', 0) / 1024:.1f} MiB), {st.get('open_fds')} fds")
            return
        r = parse_any(tool, path)
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot parse {path}: {e}")
        return
    line = (f"{fmt(r.get('rps'))} req/s, p50 {fmt(r.get('p50_ms'), 2)} ms, p99 {fmt(r.get('p99_ms'), 2)} ms, "
            f"p99.9 {fmt(r.get('p999_ms'), 2)} ms")
    if r.get("non_2xx"):
        line += f", non-2xx {r['non_2xx']}"
    if r.get("errors"):
        line += f", errors {r['errors']}"
    if r.get("status_counts"):
        line += ", statuses " + " ".join(f"{k}={v}" for k, v in sorted(r["status_counts"].items()))
    print(line)


def read_callgrind(path):
    """bench/callgrind.py's JSON lines."""
    try:
        return [json.loads(l) for l in read_lines(path)]
    except FileNotFoundError:
        return []


def fmt(v, nd=0):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"


def cmd_report(results):
    raw = os.path.join(results, "raw")
    meta = json.load(open(os.path.join(raw, "meta.json")))
    full, rate, storm = {}, {}, {}
    for line in read_lines(os.path.join(raw, "index.tsv")):
        kind, scenario, key, path = line.split("\t")
        if kind == "full":
            full.setdefault(scenario, []).append(parse_wrk(read_out(path)))
        elif kind in ("rate-wrk2", "rate-oha"):
            rate.setdefault(scenario, {})[key] = parse_any(kind[5:], path)
        elif kind in ("storm-wrk2", "storm-oha"):
            storm[scenario] = dict(parse_any(kind[6:], path), target_rps=int(key))
        elif kind == "storm-login":
            storm["login"] = dict(parse_wrk(read_out(path)), connections=int(key))

    scen = {}
    for name, runs in full.items():
        rps = [r["rps"] for r in runs if r.get("rps") is not None]
        scen[name] = {
            "runs": runs,
            "rps_median": statistics.median(rps) if rps else None,
            "rps_min": min(rps) if rps else None,
            "rps_max": max(rps) if rps else None,
            "non_2xx": sum(r.get("non_2xx", 0) for r in runs),
            "socket_errors": sum(r.get("socket_errors", 0) for r in runs),
        }
    starved = {name: sum(r.get("starved", 0) for r in runs) for name, runs in full.items()}
    ceiling = scen.get("baseline", {}).get("rps_median")
    ceiling16 = scen.get("baseline_p16", {}).get("rps_median")
    for name, s in scen.items():
        if name.startswith("baseline"):
            continue
        c = ceiling16 if name.endswith("_p16") else ceiling
        s["ceiling"] = "baseline_p16" if name.endswith("_p16") else "baseline"
        s["ratio_to_ceiling"] = (s["rps_median"] / c) if (c and s["rps_median"]) else None

    argon2 = meta.get("argon2") or {}
    out = {
        "generated_at": meta.get("generated_at"),
        "command": meta.get("command"),
        "machine": meta.get("machine"),
        "settings": meta.get("settings"),
        "scenarios": scen,
        "constant_rate": rate,
        "argon2": argon2,
        "memory": meta.get("memory"),
    }
    login_med = scen.get("login", {}).get("rps_median")
    if argon2.get("hashes_per_second") and login_med:
        usable = meta.get("settings", {}).get("login_pool_usable_cores", 1)
        cap = argon2["hashes_per_second"] * usable
        out["argon2"]["login_ceiling"] = cap
        out["argon2"]["login_ratio"] = login_med / cap
    out["login_storm"] = login_storm_section(meta, storm)
    out["memory"] = memory_section(meta, raw)
    out["profiles"] = profile_section(raw)
    out["instructions"] = {c["scenario"]: c for c in read_callgrind(os.path.join(raw, "callgrind.jsonl"))}
    with open(os.path.join(results, "latest.json"), "w") as f:
        json.dump(out, f, indent=2, sort_keys=False)
        f.write("\n")

    m = meta.get("machine", {})
    st = meta.get("settings", {})
    L = []
    L.append(f"# tokend benchmark — {meta.get('generated_at')}")
    L.append("")
    L.append(f"Command: `{meta.get('command')}`  ")
    L.append(f"Machine: {m.get('cpu_model')}, nproc {m.get('nproc')}, kernel {m.get('kernel')}  ")
    L.append(f"tokend: `taskset -c {st.get('server_cpu')}`, `TOKEND_SERVER_CORES=1`, "
             f"`TOKEND_REDIS_REVOCATION_MIRROR=true` (validate_redis: a second tokend with the mirror off, "
             f"one Redis round trip per revocation check, the default); "
             f"load: `taskset -c {st.get('client_cpu')} wrk -t1 -c{st.get('connections')} -d{st.get('duration')}`, "
             f"{st.get('runs')} runs per scenario (interleaved); ceiling: may_minihttp hello-world "
             f"(`bench/baseline`) pinned the same way, same wrk settings.")
    L.append("")
    L.append("| scenario | req/s median | min | max | ceiling | ratio to ceiling | non-2xx | socket errors |")
    L.append("|---|---:|---:|---:|---|---:|---:|---:|")
    order = ["baseline", "baseline_p16", "healthz", "validate", "validate_p16", "validate_redis",
             "validate_redis_tls",
             "validate_401", "validate_malformed", "introspect", "introspect_p16", "client_credentials",
             "authorize", "authorization_code", "refresh", "login", "mixed"]
    for name in order + sorted(k for k in scen if k not in order):
        if name not in scen:
            continue
        s = scen[name]
        ratio = s.get("ratio_to_ceiling")
        L.append(f"| {name} | {fmt(s['rps_median'])} | {fmt(s['rps_min'])} | {fmt(s['rps_max'])} | "
                 f"{s.get('ceiling', '(is the ceiling)')} | {fmt(ratio, 2) if ratio is not None else '—'} | "
                 f"{s['non_2xx']} | {s['socket_errors']} |")
    L.append("")
    if argon2:
        L.append(f"**argon2id single-thread rate** (configured parameters): "
                 f"{fmt(argon2.get('hashes_per_second'), 1)} hashes/s "
                 f"(median {argon2.get('median_ms')} ms per login over {argon2.get('logins')} logins). "
                 f"Method: {argon2.get('method')}.")
        if "login_ratio" in argon2:
            L.append(f"Login ceiling = {st.get('login_pool_usable_cores', 1)} usable core(s) × that rate = "
                     f"{fmt(argon2['login_ceiling'], 1)} logins/s; measured login median is "
                     f"{fmt(argon2['login_ratio'], 2)} × that ceiling. "
                     f"(The blocking pool has {st.get('blocking_threads')} thread(s): limits.blocking_threads "
                     f"defaults to the CPUs tokend may use, and `taskset -c {st.get('server_cpu')}` leaves it one.)")
        L.append("")
    if rate:
        for scenario, rates in rate.items():
            tool = next(iter(rates.values())).get("tool")
            L.append(f"### Constant rate: {scenario} ({tool}"
                     + (", `--latency-correction`, one token for every request since oha cannot vary headers"
                        if tool == "oha" else ", corrected for coordinated omission") + ")")
            L.append("")
            L.append("| target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | uncorrected p50 / p99 ms "
                     "| non-2xx | errors | timeouts | statuses |")
            L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for key in sorted(rates, key=lambda k: int(k)):
                r = rates[key]
                L.append(f"| {int(key):,} | {fmt(r.get('rps'))} | {fmt(r.get('p50_ms'), 3)} | "
                         f"{fmt(r.get('p99_ms'), 3)} | {fmt(r.get('p999_ms'), 3)} | {fmt_uncorrected(r)} | "
                         f"{r.get('non_2xx', 0)} | "
                         f"{r.get('errors', r.get('socket_errors', 0))} | {r.get('timeouts', '—')} | "
                         f"{fmt_codes(r.get('status_counts'))} |")
            L.append("")
            if scenario == "mixed":
                L.extend(mixed_rate_text(rates, argon2, st))
        if next(iter(next(iter(rate.values())).values())).get("tool") == "wrk2":
            L.append("wrk2 columns: *non-2xx* is wrk2's count of responses with status ≥ 400; *errors* are "
                     "connect, read and write errors; *timeouts* is wrk2's count, every 2 s, of connections whose "
                     "last request started more than 2 s earlier (idle connections included, so at low "
                     "per-connection rates it counts waits, not failures); *statuses* are counted by the Lua "
                     "script's response() (mixed only: validate.lua has no response hook, to keep the client "
                     "fast). wrk2 records the whole run when DURATION ≤ 10 s; with a longer DURATION it drops "
                     "the first ~10 s as calibration. wrk2 measures each latency from the time the request "
                     "should have been sent (that is its correction for coordinated omission), and it schedules "
                     "each connection's next request with millisecond timers rounded up, so its own sending "
                     "lateness (up to ~1 ms) is part of every latency it reports: p50 ≈ 1 ms even when tokend "
                     "answers in 0.2 ms. *uncorrected* (wrk2 -U) is measured from the actual send; oha, which "
                     "sends on time, reports figures close to those.")
            L.append("")
    L.extend(login_storm_text(out.get("login_storm"), st))
    L.extend(memory_text(out.get("memory")))
    L.extend(instructions_text(out.get("instructions")))
    L.extend(profile_text(out.get("profiles")))
    L.extend(targets_text(out, st))
    notes = list(meta.get("notes") or [])
    for name, n in sorted(starved.items()):
        if n:
            notes.append(f"{name}: {n:,} requests found its pool of single-use values empty and went to "
                         f"/healthz instead, so its req/s is not the scenario's own (more values are needed: "
                         f"refresh.txt's tokens, or for authorization_code a larger MINT_FACTOR).")
    if notes:
        L.append("Notes:")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
        L.append("")
    with open(os.path.join(results, "summary.md"), "w") as f:
        f.write("\n".join(L))
    print("\n".join(L))


def instructions_text(ins):
    if not ins:
        return []
    n = next(iter(ins.values())).get("requests")
    L = ["### Instructions per request (callgrind)", "",
         f"`bench/callgrind.py`: each server under `valgrind --tool=callgrind`, pinned like the runs above "
         f"(tokend: one core, the mirror on); one keep-alive connection, 200 requests of warm-up, then "
         f"{n:,} requests one at a time (a *_p16* scenario: 16 to a write, as the pipelined runs send them, "
         f"its 16 answers read before the next write; its × baseline is against baseline_p16). *serving thread*: the busiest thread of that interval (the core "
         f"that served them), per request; *all threads*: every thread of the process; *checks via Redis*: "
         f"revocation checks of the interval not answered by the mirror (0: every count is of the mirror's "
         f"path, as at full speed; a scenario with some is measured again, up to three times). Instruction "
         f"counts repeat from run to run whatever else the machine does, within a few hundred (how often "
         f"the event loop parks between two requests depends on the client's timing).", "",
         "| scenario | status | serving thread | all threads | × baseline | checks via Redis |",
         "|---|---:|---:|---:|---:|---:|"]
    order = ["baseline", "healthz", "validate", "validate_401", "validate_malformed", "introspect",
             "client_credentials", "validate_forged", "validate_expired",
             "baseline_p16", "healthz_p16", "validate_p16", "introspect_p16"]
    for name in order + sorted(k for k in ins if k not in order):
        c = ins.get(name)
        if not c:
            continue
        # A pipelined scenario is compared with the pipelined baseline.
        base_name = "baseline_p16" if name.endswith("_p16") else "baseline"
        base = (ins.get(base_name) or {}).get("serving_thread")
        x = f"{c['serving_thread'] / base:.1f}" if base else "—"
        via = c.get("redis_fallbacks")
        L.append(f"| {name} | {c['status']} | {c['serving_thread']:,} | {c['all_threads']:,} | {x} | "
                 f"{'—' if via is None else f'{via:,}'} |")
    L.append("")
    return L


PROFILES = ["validate", "validate_p16", "introspect_p16", "baseline_p16"]


def profile_section(raw):
    """perf report's top entries and DSO split for each profiled scenario,
    as run.sh saved them (profile.NAME.symbols.txt, profile.NAME.dsos.txt)."""
    def rows(name, width):
        out = []
        for line in read_lines(os.path.join(raw, name)):
            parts = line.split(None, width)
            if len(parts) == width + 1 and parts[0].endswith("%"):
                out.append(parts)
        return out
    found = []
    for scenario in PROFILES:
        symbols = [{"percent": float(p[0][:-1]), "dso": p[1], "symbol": p[3] if len(p) > 3 else p[2]}
                   for p in rows(f"profile.{scenario}.symbols.txt", 3)]
        dsos = [{"percent": float(p[0][:-1]), "dso": p[1]}
                for p in rows(f"profile.{scenario}.dsos.txt", 1)]
        if symbols or dsos:
            found.append({"scenario": scenario, "event": "cpu-clock",
                          "process": "baseline" if scenario.startswith("baseline") else "tokend",
                          "top": symbols, "dsos": dsos})
    return found or None


def profile_text(profiles):
    if not profiles:
        return []
    L = ["### Profiles at full speed (`perf record -e cpu-clock`, the server's process only)", ""]
    L.append("Where the server's CPU time goes:")
    L.append("")
    for prof in profiles:
        if prof.get("dsos"):
            L.append(f"- {prof['scenario']} ({prof['process']}): " + ", ".join(
                f"{d['dso']} {d['percent']:.1f}%" for d in prof["dsos"]) + ".")
    L.append("")
    for prof in profiles:
        if prof.get("top") and prof["process"] == "tokend":
            L.append(f"Top symbols, {prof['scenario']}:")
            L.append("")
            L.append("| % | where | symbol |")
            L.append("|---:|---|---|")
            for t in prof["top"]:
                L.append(f"| {t['percent']:.2f} | {t['dso']} | `{t['symbol']}` |")
            L.append("")
    return L


def targets_text(out, st):
    """Each target of issues #4 and #15 against this run's figures."""
    sc = out.get("scenarios", {})
    ratio = lambda n: sc.get(n, {}).get("ratio_to_ceiling")
    rows = []
    def row(name, target, value, ok):
        rows.append(f"| {name} | {target} | {value} | {'met' if ok else ('missed' if ok is not None else '—')} |")
    def ratio_row(name, ceiling, at_least):
        v = ratio(name)
        row(f"{name} / {ceiling}", f"≥ {at_least:.2f}", fmt(v, 2) if v else "—", (v >= at_least) if v else None)
    ratio_row("validate", "ceiling", 0.85)
    ratio_row("validate_p16", "pipelined ceiling", 0.70)
    ratio_row("introspect", "ceiling", 0.85)
    ratio_row("introspect_p16", "pipelined ceiling", 0.5)
    v = sc.get("client_credentials", {}).get("rps_median")
    row("client_credentials", "≥ 35,000 req/s", fmt(v) if v else "—", (v >= 35000) if v else None)
    ok = sc.get("validate", {}).get("rps_median")
    for name in ("validate_401", "validate_malformed"):
        v = sc.get(name, {}).get("rps_median")
        r = (v / ok) if (v and ok) else None
        row(f"{name} / validate", "≥ 0.95", fmt(r, 2) if r else "—", (r >= 0.95) if r else None)
    ins = out.get("instructions") or {}
    for name, cap in (("healthz", 2800), ("validate", 4500), ("introspect", 10000)):
        v = (ins.get(name) or {}).get("serving_thread")
        row(f"{name}, instructions per request", f"≤ {cap:,}", fmt(v) if v else "—", (v <= cap) if v else None)
    v = sc.get("refresh", {}).get("rps_median")
    row("refresh", "≥ 10,000 req/s", fmt(v) if v else "—", (v >= 10000) if v else None)
    a = out.get("argon2") or {}
    v = a.get("login_ratio")
    row("login", "≥ 0.9 × pool threads × argon2 rate (usable cores)", fmt(v, 2) if v else "—",
        (v >= 0.9) if v else None)
    m = (out.get("constant_rate", {}).get("mixed") or {}).get("20000")
    if m:
        ok = (m.get("p99_ms") or 1e9) <= 2 and not m.get("non_2xx") and not m.get("errors") \
            and (m.get("rps") or 0) >= 0.95 * 20000
        row("mixed at 20k req/s", "p99 ≤ 2 ms, zero errors",
            f"achieved {fmt(m.get('rps'))} req/s, p99 {fmt(m.get('p99_ms'), 2)} ms", ok)
    else:
        row("mixed at 20k req/s", "p99 ≤ 2 ms, zero errors", "not measured (needs wrk2)", None)
    s = out.get("login_storm") or {}
    v = s.get("p99_ratio")
    row("login storm", "validate p99 ≤ 2 × without", fmt(v, 2) if v else "—", (v <= 2) if v else None)
    mem = out.get("memory") or {}
    held = mem.get("vmrss_with_connections_kib")
    row("memory, 10,000 connections", "< 100 MiB", f"{held / 1024:.1f} MiB" if held else "—",
        (held < 100 * 1024) if held else None)
    return ["### Targets", "", "| what | target | this run | |", "|---|---|---|---|"] + rows + [""]


def fmt_uncorrected(r):
    if r.get("uncorrected_p50_ms") is None:
        return "—"
    return f"{fmt(r.get('uncorrected_p50_ms'), 3)} / {fmt(r.get('uncorrected_p99_ms'), 3)}"


def fmt_codes(codes):
    if not codes:
        return "—"
    return " ".join(f"{k}: {v:,}" for k, v in sorted(codes.items()))


def mixed_rate_text(rates, argon2, st):
    """Why the mix falls short at constant rate: its logins, against the
    argon2 ceiling, from what the run saw (503s or none)."""
    cap = argon2.get("login_ceiling") or argon2.get("hashes_per_second")
    if not cap:
        return []
    conns = st.get("connections")
    shed = sum(r.get("status_counts", {}).get("503", 0) for r in rates.values())
    over = [int(k) for k in sorted(rates, key=int) if int(k) > 100 * cap]
    lines = [f"mixed sends 1 login in every 100 requests, so at R req/s it asks for R/100 logins/s; one CPU "
             f"verifies about {cap:.0f} argon2id hashes/s, so above about {100 * cap:,.0f} req/s the logins "
             f"cannot all be served"
             + (f" ({', '.join(f'{r:,}' for r in over)} req/s here)." if over else " (no rate here is above it).")]
    if shed:
        lines[0] += (f" tokend shed {shed:,} requests with 503 (its blocking pool's queue, "
                     f"limits.blocking_queue = 256, was full: it answers them at once instead of queueing "
                     f"them behind argon2)."
                     " The other requests of the mix go on at the requested rate only as far as the "
                     "connections that wait for an accepted login allow.")
    else:
        lines[0] += (f" No 503 was seen: wrk2 keeps at most {conns} requests in flight ({conns} connections), so "
                     f"at most {conns} logins wait in tokend's blocking pool, fewer than its queue "
                     f"(limits.blocking_queue = 256) holds; the queue never overflows, so nothing is shed. "
                     f"Instead every login waits its turn (up to ~{conns / cap:.1f} s behind {conns} others), "
                     f"the connection that sent it sends nothing meanwhile, and once every connection waits on a "
                     f"login the mix runs at the login ceiling × 100. The latencies above, corrected for "
                     f"coordinated omission, are that queue. Shedding (503) needs more logins in flight than "
                     f"the queue holds, e.g. more connections than 256 + blocking_threads.")
    lines.append("")
    return lines


def login_storm_section(meta, storm):
    if "alone" not in storm or "storm" not in storm:
        return None
    a, w, lg = storm["alone"], storm["storm"], storm.get("login", {})
    ratio = (w["p99_ms"] / a["p99_ms"]) if a.get("p99_ms") and w.get("p99_ms") is not None else None
    ok = (lg.get("status_counts") or {}).get("200")
    sec = {
        "tool": a.get("tool"),
        "target_rps": a.get("target_rps"),
        "validate_alone": a,
        "validate_with_storm": w,
        "p99_ratio": ratio,
        "target": "validate p99 with the storm <= 2 x without",
        "target_met": (ratio <= 2.0) if ratio is not None else None,
        "logins": {
            "generator": f"wrk -t1 -c{lg.get('connections')} -s bench/login.lua, started 1 s before the "
                         f"validate run and stopped ~2 s after it, same CPU as the validate generator",
            "connections": lg.get("connections"),
            "responses_per_s": lg.get("rps"),
            "ok_per_s": (ok / lg["runtime_s"]) if ok is not None and lg.get("runtime_s") else None,
            "status_counts": lg.get("status_counts"),
            "p50_ms": lg.get("p50_ms"),
            "p99_ms": lg.get("p99_ms"),
            "errors": lg.get("errors"),
        },
    }
    return sec


def login_storm_text(sec, st):
    if not sec:
        return []
    a, w, lg = sec["validate_alone"], sec["validate_with_storm"], sec["logins"]
    L = [f"### Login storm: validate at a constant {sec['target_rps']:,} req/s ({sec['tool']}), "
         f"alone and while logins keep the blocking pool busy", ""]
    L.append("| validate | achieved req/s | p50 ms | p99 ms | p99.9 ms | uncorrected p50 / p99 ms | non-2xx | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in (("alone", a), ("with the login storm", w)):
        L.append(f"| {name} | {fmt(r.get('rps'))} | {fmt(r.get('p50_ms'), 3)} | {fmt(r.get('p99_ms'), 3)} | "
                 f"{fmt(r.get('p999_ms'), 3)} | {fmt_uncorrected(r)} | {r.get('non_2xx', 0)} | {r.get('errors', 0)} |")
    L.append("")
    ratio = sec.get("p99_ratio")
    verdict = "—" if ratio is None else ("met" if sec.get("target_met") else "missed")
    L.append(f"p99 with the storm / p99 alone = **{fmt(ratio, 2)}** (target ≤ 2: {verdict}). "
             f"Logins during the storm: {fmt(lg.get('ok_per_s'), 1)} successful/s "
             f"({fmt(lg.get('responses_per_s'), 1)} responses/s; statuses {fmt_codes(lg.get('status_counts'))}; "
             f"login p50 {fmt(lg.get('p50_ms'), 0)} ms) from {lg.get('generator')}. "
             f"The blocking pool has {st.get('blocking_threads')} thread(s) (limits.blocking_threads defaults to "
             f"the CPUs tokend may use, and `taskset -c {st.get('server_cpu')}` leaves it "
             f"{st.get('login_pool_usable_cores', 1)}): argon2 and validation share that one CPU here, so the "
             f"storm takes CPU time from the worker core even though the core itself never blocks.")
    L.append("")
    return L


def memory_section(meta, raw):
    mem = dict(meta.get("memory") or {})
    path = os.path.join(raw, "connections.json")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        try:
            hold = json.load(open(path))
        except ValueError:
            hold = None
        if hold:
            mem["with_connections"] = hold
            before = hold.get("before", {}).get("vmrss_kib")
            with_ = hold.get("settled", {}).get("vmrss_kib")
            n = hold.get("connections_answered") or 0
            mem["connections_held"] = n
            mem["vmrss_with_connections_kib"] = with_
            mem["target_mib"] = 100
            if with_ is not None:
                mem["target_met"] = with_ / 1024 < 100
                mem["over_target_mib"] = round(max(0.0, with_ / 1024 - 100), 1)
            if before is not None and with_ is not None and n:
                mem["kib_per_connection"] = round((with_ - before) / n, 2)
    return mem


def memory_text(mem):
    if not mem:
        return []
    L = [f"### Memory", "",
         f"tokend after all runs, no connection open: VmRSS {mem.get('vmrss_kib', 0) / 1024:.1f} MiB, "
         f"peak VmHWM {mem.get('vmhwm_kib', 0) / 1024:.1f} MiB (1,000 users)."]
    h = mem.get("with_connections")
    if h:
        st, b = h.get("settled", {}), h.get("before", {})
        over = mem.get("over_target_mib")
        verdict = ("met" if mem.get("target_met")
                   else f"missed by {over:.1f} MiB ({st.get('vmrss_kib', 0) / 1024 / 100:.1f} × the target)")
        L[-1] += (f" With {h.get('connections_answered'):,} of {h.get('connections_requested'):,} keep-alive "
                  f"connections open (each answered one validate: statuses {fmt_codes(h.get('status_counts'))}; "
                  f"{h.get('still_open_after_settle'):,} still open after {h.get('settle_seconds')} s idle; "
                  f"tokend had {st.get('open_fds'):,} descriptors open): VmRSS "
                  f"**{st.get('vmrss_kib', 0) / 1024:.1f} MiB** (before opening them "
                  f"{b.get('vmrss_kib', 0) / 1024:.1f} MiB, right after the last answer "
                  f"{h.get('all_answered', {}).get('vmrss_kib', 0) / 1024:.1f} MiB, after closing them "
                  f"{h.get('after_close', {}).get('vmrss_kib', 0) / 1024:.1f} MiB; "
                  f"{fmt(mem.get('kib_per_connection'), 1)} KiB per connection), peak VmHWM "
                  f"{st.get('vmhwm_kib', 0) / 1024:.1f} MiB. Target < 100 MiB: {verdict}.")
        if h.get("errors"):
            L[-1] += f" Connection errors: {h['errors']}."
    else:
        L[-1] += " The held-connections case was not measured (HOLD_CONNECTIONS=0 or the holder failed)."
    L.append("")
    return L


def cmd_instructions(path):
    """The instructions table alone, from bench/callgrind.py's JSON lines
    (bench/run.sh with ONLY=callgrind prints it)."""
    ins = {c["scenario"]: c for c in read_callgrind(path)}
    print("\n".join(instructions_text(ins)))


if __name__ == "__main__":
    cmds = {"tokens": cmd_tokens, "web": cmd_web, "argon2": cmd_argon2, "report": cmd_report, "brief": cmd_brief,
            "instructions": cmd_instructions}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        raise SystemExit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
