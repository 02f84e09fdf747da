#!/usr/bin/env python3
"""Holds many keep-alive connections open to tokend and measures its memory.

  hold_connections.py URL TOKENS_FILE N TOKEND_PID [SETTLE_SECONDS]

Opens N connections to URL (at most 256 connecting at once), sends on each
one GET /validate with a bearer token of TOKENS_FILE (round robin) and reads
the response, then keeps them all open and idle. It reads tokend's VmRSS,
VmHWM and open file descriptors from /proc/TOKEND_PID before opening, once
every connection has had its answer, again SETTLE_SECONDS later (default 3;
tokend frees an idle connection's buffers after a second of silence), and
once more after closing them all. Prints one JSON object on stdout.

Raises its own RLIMIT_NOFILE (soft limit up to the hard one) first; the
server needs as many descriptors, and a per-core connection cap
(server.max_connections_per_core) above N. Python standard library only.
"""
import asyncio
import json
import os
import resource
import sys
import time
import urllib.parse

CONNECTING_AT_ONCE = 256
TIMEOUT = 30.0


def proc_sample(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key.lower() + "_kib"] = int(value.split()[0])
        out["open_fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as e:
        out["error"] = str(e)
    return out


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def open_one(host, port, request, gate, conns, statuses, errors):
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            errors[type(e).__name__ + " (connect)"] = errors.get(type(e).__name__ + " (connect)", 0) + 1
            return
        try:
            writer.write(request)
            status = await asyncio.wait_for(read_response(reader), TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            writer.close()
            return
        statuses[status] = statuses.get(status, 0) + 1
        conns.append((reader, writer))


async def main(url, tokens_file, n, pid, settle):
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname, u.port or 80
    with open(tokens_file) as f:
        tokens = [l.strip() for l in f if l.strip()]
    requests = [
        (f"GET /validate HTTP/1.1\r\nHost: {host}:{port}\r\n"
         f"Authorization: Bearer {t}\r\n\r\n").encode()
        for t in tokens
    ]
    result = {"url": url, "connections_requested": n, "tokend_pid": pid, "settle_seconds": settle}
    result["before"] = proc_sample(pid)

    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    conns, statuses, errors = [], {}, {}
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(host, port, requests[i % len(requests)], gate, conns, statuses, errors)
                           for i in range(n)))
    result["seconds_to_open"] = round(time.monotonic() - t0, 2)
    result["connections_answered"] = len(conns)
    result["status_counts"] = {str(k): v for k, v in sorted(statuses.items())}
    result["errors"] = errors
    result["all_answered"] = proc_sample(pid)

    await asyncio.sleep(settle)
    result["settled"] = proc_sample(pid)
    result["still_open_after_settle"] = sum(
        1 for r, w in conns if not r.at_eof() and not w.is_closing())

    for _, w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    await asyncio.sleep(1.0)
    result["after_close"] = proc_sample(pid)
    return result


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        raise SystemExit(__doc__)
    url, tokens_file, n, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    settle = float(sys.argv[5]) if len(sys.argv) == 6 else 3.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        raise SystemExit(f"hold_connections: RLIMIT_NOFILE hard limit {hard} < {want} needed for {n} connections")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    out = asyncio.run(main(url, tokens_file, n, pid, settle))
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
