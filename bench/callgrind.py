#!/usr/bin/env python3
"""Instructions per request, counted by callgrind (python3 standard library only).

  callgrind.py PID URL RESULTS_DIR OUT_DIR REQUESTS SCENARIO...

PID is a server started under
`valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=OUT_DIR/cg.%p`
(bench/run.sh does that for tokend, with one worker core and the revocation
mirror on, and for the may_minihttp baseline). For each SCENARIO this script
opens one keep-alive connection, sends WARM_UP (200) requests, zeroes
callgrind's counters (`callgrind_control -z`), sends REQUESTS requests one at
a time (each answered before the next), dumps the counters
(`callgrind_control -d`) and prints one JSON line:

  {"scenario": ..., "requests": N, "status": 200,
   "serving_thread": instructions per request on the busiest thread,
   "all_threads": instructions per request, every thread}

The busiest thread of the measured interval is the serving core's (tokend's
one worker core; may's worker for the baseline): everything a request costs
there, from the socket's readiness to the answer's write. Background work in
the interval (the once-a-second ticker, the mirror's stream reads) is counted
too; it is small next to REQUESTS requests. Callgrind counts instructions,
not time, so the figures repeat run after run whatever else the machine does.

Scenarios (the tokens, users and client come from RESULTS_DIR, as the wrk
scripts read them):
  baseline           GET / of the may_minihttp baseline (the ceiling)
  healthz            GET /healthz
  validate           GET /validate with a valid access token (cached after
                     the warm-up: the steady state of a forward-auth proxy)
  validate_401       GET /validate without a token
  validate_malformed GET /validate with a bearer value that is no JWT
  validate_forged    GET /validate with a real token whose signature is
                     altered: one full signature verification per request
  validate_expired   GET /validate with a real token whose `exp` is moved
                     into the past: refused before the signature
  introspect         POST /oauth/introspect of a valid access token, HTTP Basic
  client_credentials POST /oauth/token grant_type=client_credentials, HTTP
                     Basic: one token signed per request

A scenario named with the suffix _p16 (baseline_p16, healthz_p16,
validate_p16, introspect_p16) sends its requests 16 to a write, as the
pipelined wrk runs do, and reads the 16 answers before the next write: what
each request costs once the socket's reads, writes and wake-ups are shared
by 16, the cost the pipelined ratios to the ceiling measure.
"""
import base64
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare import client_basic, read_lines  # noqa: E402

WARM_UP = 200
PIPELINE_SUFFIX = "_p16"
PIPELINE_DEPTH = 16


def forged(token):
    """`token` with its signature's middle character changed (still base64url)."""
    head, _, sig = token.rpartition(".")
    mid = len(sig) // 2
    repl = "A" if sig[mid] != "A" else "B"
    return f"{head}.{sig[:mid]}{repl}{sig[mid + 1:]}"


def expired(token):
    """`token` with its payload's `exp` moved into the past (so its signature
    no longer matches): tokend refuses it before the signature."""
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = claims["iat"] - 1
    body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{head}.{body}.{sig}"


def requests_for(scenario, host, results):
    def get(path, headers=()):
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"] + list(headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def post(path, body):
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}",
                 f"Authorization: {client_basic(results)}",
                 "Content-Type: application/x-www-form-urlencoded",
                 f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    token = lambda: read_lines(os.path.join(results, "tokens.txt"))[0]
    if scenario == "baseline":
        return get("/"), 200
    if scenario == "healthz":
        return get("/healthz"), 200
    if scenario == "validate":
        return get("/validate", [f"Authorization: Bearer {token()}"]), 200
    if scenario == "validate_401":
        return get("/validate"), 401
    if scenario == "validate_malformed":
        return get("/validate", ["Authorization: Bearer not-a-jwt"]), 401
    if scenario == "validate_forged":
        return get("/validate", [f"Authorization: Bearer {forged(token())}"]), 401
    if scenario == "validate_expired":
        return get("/validate", [f"Authorization: Bearer {expired(token())}"]), 401
    if scenario == "introspect":
        return post("/oauth/introspect", "token=" + urllib.parse.quote(token(), safe="")), 200
    if scenario == "client_credentials":
        return post("/oauth/token", "grant_type=client_credentials&scope=read"), 200
    sys.exit(f"callgrind.py: unknown scenario {scenario!r}")


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=60)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def exchange(self, req):
        """Sends one request and reads its whole answer; returns the status."""
        self.s.sendall(req)
        return self.exchange_read()

    def exchange_read(self):
        """Reads one whole answer (its body into self.body); returns the status."""
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self.fill()
        self.body, self.buf = self.buf[:length], self.buf[length:]
        return status

    def fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk


def dumps(out_dir, pid):
    """Callgrind's files for `pid` in `out_dir`: cg.PID, cg.PID-TT, cg.PID.D-TT."""
    return {p for p in glob.glob(os.path.join(out_dir, f"cg.{pid}*"))
            if os.path.basename(p)[len(f"cg.{pid}"):][:1] in ("", "-", ".")}


def revocation_checks(host, port):
    """tokend's (mirror answers, Redis fallbacks) so far, from /metrics;
    None for a server without them (the baseline)."""
    conn = Conn(host, port)
    conn.s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status = conn.exchange_read()
    page = conn.body.decode(errors="replace")
    conn.s.close()
    if status != 200:
        return None
    found = {}
    for line in page.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tokend_revocation_mirror_answers_total", "tokend_revocation_mirror_fallbacks_total"):
            found[name] = int(float(value))
    if len(found) != 2:
        return None
    return found["tokend_revocation_mirror_answers_total"], found["tokend_revocation_mirror_fallbacks_total"]


def thread_totals(paths):
    """{path: instructions} from callgrind dump files (`totals:` or `summary:`)."""
    out = {}
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    out[p] = int(line.split()[1])
                    break
    return out


def measure(pid, host, port, results, out_dir, n, scenario):
    depth = 1
    name = scenario
    if scenario.endswith(PIPELINE_SUFFIX):
        depth, name = PIPELINE_DEPTH, scenario[:-len(PIPELINE_SUFFIX)]
        if n % depth:
            sys.exit(f"callgrind.py: {scenario}: REQUESTS must be a multiple of {depth}")
    one, want = requests_for(name, host, results)
    req = one * depth
    conn = Conn(host, port)

    def batch():
        conn.s.sendall(req)
        return [conn.exchange_read() for _ in range(depth)]

    for _ in range(WARM_UP // depth):
        got = batch()
        if any(g != want for g in got):
            sys.exit(f"callgrind.py: {scenario}: status {got}, expected {want}")
    checks_before = revocation_checks(host, port)
    before = dumps(out_dir, pid)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    for _ in range(n // depth):
        batch()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    conn.s.close()
    # The dump is written by the server's threads as they next run.
    for _ in range(100):
        new = dumps(out_dir, pid) - before
        if new:
            time.sleep(0.5)
            break
        time.sleep(0.1)
    totals = thread_totals(sorted(dumps(out_dir, pid) - before))
    if not totals:
        sys.exit(f"callgrind.py: {scenario}: no callgrind dump appeared in {out_dir}")
    out = {
        "scenario": scenario,
        "requests": n,
        "status": want,
        "serving_thread": round(max(totals.values()) / n),
        "all_threads": round(sum(totals.values()) / n),
    }
    # Which path the revocation checks took (read outside the counted
    # interval): the mirror's, as measured at full speed, or Redis's.
    checks_after = revocation_checks(host, port)
    if checks_before and checks_after:
        out["mirror_answers"] = checks_after[0] - checks_before[0]
        out["redis_fallbacks"] = checks_after[1] - checks_before[1]
    return out


def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    pid, url, results, out_dir, n = sys.argv[1:6]
    u = urllib.parse.urlsplit(url)
    for scenario in sys.argv[6:]:
        # A count taken while some checks went to Redis (the mirror fell
        # behind under valgrind's slowness) is not the path measured at
        # full speed: measured again, at most three times, and said.
        for attempt in range(3):
            r = measure(int(pid), u.hostname, u.port, results, out_dir, int(n), scenario)
            if not r.get("redis_fallbacks"):
                break
            print(f"callgrind.py: {scenario}: {r['redis_fallbacks']} checks went to Redis; again",
                  file=sys.stderr)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
