"""Long-lived sessions, run *on a client host* (standard library only): --count HTTP keep-alive
connections through the VIP, each asking for the page every --interval seconds on the same
connection, until the file --stop exists (or --duration runs out); then each is closed by its
client. Prints JSON lines as things happen, times on this host's CLOCK_MONOTONIC:

    ["clock", now]                           first: the verifier puts the times on its own clock
    ["opened", i, t, port]                   session i connected (from client port `port`) and had
                                             its first answer
    ["failed", i, t, why, port]              session i lost (why: the phase and error), at t;
                                             its client port, to find it in a capture or a log
    ["closed", i, t, answers, longest, foreign]
        session i ended cleanly by its client: its answers, the longest an answer took (a
        stall), and how many answers showed another address than the client's
    ["done"]

A session whose answer takes longer than --timeout fails (`answer: TimeoutError`): a connection
the new VIP holder dropped, or reset, shows here.

    python3 session_client.py --url http://192.0.2.10/ --source 198.51.100.10 --count 200 --stop /tmp/f
"""

import argparse
import http.client
import json
import os
import re
import sys
import threading
import time
from urllib.parse import urlsplit

MAX_DURATION = 900.0  # bounded, whatever the caller asks
PAGE = re.compile(r"client=(\S+)")
lock = threading.Lock()


def say(*item):
    with lock:
        try:
            print(json.dumps(list(item)), flush=True)
        except OSError:  # the reader is gone (the verifier stopped it): so is this client
            os._exit(0)


def session(i, args, stop, deadline):
    u = urlsplit(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=args.timeout, source_address=(args.source, 0))
    answers, longest, foreign, phase, port = 0, 0.0, 0, "connect", None
    try:
        conn.connect()
        port = conn.sock.getsockname()[1]
        phase = "answer"
        due = time.monotonic()
        while True:
            start = time.monotonic()
            conn.request("GET", u.path or "/", headers={"Connection": "keep-alive"})
            body = conn.getresponse().read().decode(errors="replace")
            took = time.monotonic() - start
            m = PAGE.search(body)
            if not m:
                say("failed", i, time.monotonic(), "answer: no page", port)
                return
            foreign += m.group(1) != args.source
            answers += 1
            longest = max(longest, took)
            if answers == 1:
                say("opened", i, time.monotonic(), port)
            due += args.interval
            while time.monotonic() < due:
                if stop.is_set() or time.monotonic() > deadline:
                    phase = "close"
                    conn.close()
                    say("closed", i, time.monotonic(), answers, round(longest, 4), foreign)
                    return
                time.sleep(min(0.05, max(0.0, due - time.monotonic())))
    except OSError as e:
        say("failed", i, time.monotonic(), f"{phase}: {type(e).__name__}", port)
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--stop", required=True, help="the sessions end when this file exists")
    args = ap.parse_args()
    say("clock", time.monotonic())
    stop = threading.Event()
    deadline = time.monotonic() + min(args.duration, MAX_DURATION)
    threads = []
    for i in range(args.count):
        th = threading.Thread(target=session, args=(i, args, stop, deadline), daemon=True)
        th.start()
        threads.append(th)
        time.sleep(args.interval / args.count)  # spread over one interval: a steady load
    while not stop.is_set() and time.monotonic() < deadline:
        if os.path.exists(args.stop):
            stop.set()
        time.sleep(0.05)
    stop.set()
    for th in threads:
        th.join(args.timeout + 5)
    say("done")


if __name__ == "__main__":
    sys.exit(main())
