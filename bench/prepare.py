#!/usr/bin/env python3
"""Helpers of bench/run.sh (python3 standard library only).

  prepare.py tokens  URL RESULTS_DIR [WORKERS]
      Logs every user of users.txt in once (password grant, concurrent
      http.client connections) and writes tokens.txt (access tokens) and
      refresh.txt (refresh tokens), one a line.
  prepare.py argon2  URL RESULTS_DIR N
      N sequential logins on one connection against a tokend whose blocking
      pool has ONE thread: logins/s approximates argon2id's single-thread
      verify rate with the configured parameters (it also includes one
      PostgreSQL lookup, the HTTP exchange and signing, so it slightly
      under-states the pure hash rate). Prints JSON.
  prepare.py report  RESULTS_DIR
      Parses the raw wrk / oha outputs listed in RESULTS_DIR/raw/index.tsv
      and RESULTS_DIR/raw/meta.json into latest.json and summary.md.
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


# ---------------------------------------------------------------- report

def parse_duration_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(text):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
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
    m = re.search(r"refresh pool: (\d+) unused tokens kept in \S+; (\d+) requests found", text)
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
    }


def fmt(v, nd=0):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"


def cmd_report(results):
    raw = os.path.join(results, "raw")
    meta = json.load(open(os.path.join(raw, "meta.json")))
    full, rate = {}, {}
    for line in read_lines(os.path.join(raw, "index.tsv")):
        kind, scenario, key, path = line.split("\t")
        text = open(path).read()
        if kind == "full":
            full.setdefault(scenario, []).append(parse_wrk(text))
        elif kind == "rate-wrk2":
            rate.setdefault(scenario, {})[key] = dict(parse_wrk(text), tool="wrk2")
        elif kind == "rate-oha":
            rate.setdefault(scenario, {})[key] = dict(parse_oha(text), tool="oha")

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
    L.append(f"tokend: `taskset -c {st.get('server_cpu')}`, `TOKEND_SERVER_CORES=1`; "
             f"load: `taskset -c {st.get('client_cpu')} wrk -t1 -c{st.get('connections')} -d{st.get('duration')}`, "
             f"{st.get('runs')} runs per scenario (interleaved); ceiling: may_minihttp hello-world "
             f"(`bench/baseline`) pinned the same way, same wrk settings.")
    L.append("")
    L.append("| scenario | req/s median | min | max | ceiling | ratio to ceiling | non-2xx | socket errors |")
    L.append("|---|---:|---:|---:|---|---:|---:|---:|")
    order = ["baseline", "baseline_p16", "healthz", "validate", "validate_p16",
             "introspect", "refresh", "login", "mixed"]
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
                     f"(The blocking pool has {st.get('blocking_threads')} threads, but `taskset -c "
                     f"{st.get('server_cpu')}` confines them to one CPU.)")
        L.append("")
    if rate:
        for scenario, rates in rate.items():
            tool = next(iter(rates.values())).get("tool")
            L.append(f"### Constant rate: {scenario} ({tool}"
                     + (", `--latency-correction`, one token for every request since oha cannot vary headers"
                        if tool == "oha" else ", corrected for coordinated omission") + ")")
            L.append("")
            L.append("| target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | errors |")
            L.append("|---:|---:|---:|---:|---:|---:|---:|")
            for key in sorted(rates, key=lambda k: int(k)):
                r = rates[key]
                L.append(f"| {int(key):,} | {fmt(r.get('rps'))} | {fmt(r.get('p50_ms'), 3)} | "
                         f"{fmt(r.get('p99_ms'), 3)} | {fmt(r.get('p999_ms'), 3)} | {r.get('non_2xx', 0)} | "
                         f"{r.get('errors', r.get('socket_errors', 0))} |")
            L.append("")
    mem = meta.get("memory") or {}
    if mem:
        L.append(f"**Memory** of tokend after all runs: VmRSS {mem.get('vmrss_kib', 0) / 1024:.1f} MiB, "
                 f"peak VmHWM {mem.get('vmhwm_kib', 0) / 1024:.1f} MiB "
                 f"(1,000 users; connections open at the measurement: none — the 10,000-connection case is not measured).")
        L.append("")
    notes = meta.get("notes") or []
    if notes:
        L.append("Notes:")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
        L.append("")
    with open(os.path.join(results, "summary.md"), "w") as f:
        f.write("\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    cmds = {"tokens": cmd_tokens, "argon2": cmd_argon2, "report": cmd_report}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        raise SystemExit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
