"""Request sampler, run *on a client host* (standard library only): sends requests through the
VIP, one every --interval seconds whether or not the earlier ones have answered (a population
of clients, not one user who waits), for at most --duration seconds or --count requests, and
prints one JSON line per request as it ends: [start, end, ok, backend, client_seen, source, why],
why naming a failure's phase and error (`connect: TimeoutError`, `answer: ConnectionResetError`).
Times are this host's CLOCK_MONOTONIC; the first line, ["clock", now, timeout], lets the verifier (on
another host, over SSH) put them on its own clock to line them up with the moment it injected
a fault.

At a fixed rate, an outage is seen to end by the first request sent after it ended; a client
that waits for each answer sees it end only once its pending request times out (up to
--timeout late: 0.15 s on average in a failover drill). --interval 0 sends the requests one
after the other, in order (each source once, as the spread checks ask).

    python3 sampler.py --url http://192.0.2.10/ --source 198.51.100.10 [--source ...]
"""

import argparse
import http.client
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from urllib.parse import urlsplit

# However long a caller asks: a roll-out on emulated guests (the VM lab) took 23 minutes on CI
# when it replaced all four, and its requests must span it; a drill's take under two.
MAX_DURATION = 2400.0
PAGE = re.compile(r"backend=(\S+) client=(\S+)")


def connect(url, source, timeout):
    """An HTTP(S) connection (its TLS handshake done), or for tcp:// a connected socket."""
    u = urlsplit(url)
    if u.scheme == "tcp":
        return socket.create_connection((u.hostname, u.port), timeout=timeout, source_address=(source, 0)), "/"
    if u.scheme == "https":
        ctx = ssl._create_unverified_context()  # the backends' snakeoil certificates
        conn = http.client.HTTPSConnection(
            u.hostname, u.port or 443, timeout=timeout, context=ctx, source_address=(source, 0)
        )
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout, source_address=(source, 0))
    conn.connect()  # here, not at the first request: a failure names its phase
    return conn, u.path or "/"


def ask(conn, path, keep_alive):
    try:
        if isinstance(conn, socket.socket):  # tcp://: the server speaks first, one line
            body = conn.makefile("rb").readline(1024).decode(errors="replace")
        else:
            conn.request("GET", path, headers={"Connection": "keep-alive" if keep_alive else "close"})
            body = conn.getresponse().read().decode(errors="replace")
        m = PAGE.search(body)
        return (True, m.group(1), m.group(2), None) if m else (False, None, None, "answer: no page")
    except OSError as e:
        return (False, None, None, f"answer: {type(e).__name__}")


def once(url, source, timeout):
    try:
        conn, path = connect(url, source, timeout)
    except OSError as e:
        return (False, None, None, f"connect: {type(e).__name__}")
    try:
        return ask(conn, path, keep_alive=False)
    finally:
        conn.close()


def held(url, sources, timeout):
    """One request per source, each connection kept open until all are done: the balancer sees
    them as concurrent load (what leastconn balances), not as one idle server after another."""
    open_conns = []
    try:
        for source in sources:
            start = time.monotonic()
            try:
                conn, path = connect(url, source, timeout)
                open_conns.append(conn)
                ok, backend, seen, why = ask(conn, path, keep_alive=True)
            except OSError as e:
                ok, backend, seen, why = False, None, None, f"connect: {type(e).__name__}"
            print(json.dumps([start, time.monotonic(), ok, backend, seen, source, why]), flush=True)
    finally:
        for conn in open_conns:
            conn.close()


def fixed_rate(args):
    """A request every --interval, each in its own thread; at most enough of them in flight to
    cover a request's connect and answer timeouts (one that outlives them has failed anyway),
    so a dead VIP costs the client host a bounded number of threads and sockets."""
    lock = threading.Lock()
    in_flight = threading.BoundedSemaphore(int(2 * args.timeout / args.interval) + 2)

    def one(source):
        try:
            start = time.monotonic()
            ok, backend, seen, why = once(args.url, source, args.timeout)
            line = json.dumps([start, time.monotonic(), ok, backend, seen, source, why])
            with lock:
                try:
                    print(line, flush=True)
                except OSError:  # the reader is gone (the verifier stopped it): so is this client
                    os._exit(0)
        finally:
            in_flight.release()

    deadline = time.monotonic() + min(args.duration, MAX_DURATION)  # bounded, whatever the caller asks
    due, n, threads = time.monotonic(), 0, []
    while due < deadline and (args.count == 0 or n < args.count):
        time.sleep(max(0.0, due - time.monotonic()))
        in_flight.acquire()
        th = threading.Thread(target=one, args=(args.source[n % len(args.source)],), daemon=True)
        th.start()
        threads = [x for x in threads if x.is_alive()] + [th]
        n += 1
        due = max(due + args.interval, time.monotonic())  # behind (a stall): no burst to catch up
    for th in threads:
        th.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--source", action="append", required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--hold", action="store_true", help="one request per source, connections held open")
    args = ap.parse_args()
    print(json.dumps(["clock", time.monotonic(), args.timeout]), flush=True)  # timeout: for settle()
    if args.hold:
        return held(args.url, args.source, args.timeout)
    if args.interval > 0:
        return fixed_rate(args)
    deadline = time.monotonic() + min(args.duration, MAX_DURATION)  # bounded, whatever the caller asks
    n = 0
    while time.monotonic() < deadline and (args.count == 0 or n < args.count):
        source = args.source[n % len(args.source)]
        start = time.monotonic()
        ok, backend, seen, why = once(args.url, source, args.timeout)
        print(json.dumps([start, time.monotonic(), ok, backend, seen, source, why]), flush=True)
        n += 1


if __name__ == "__main__":
    sys.exit(main())
