"""The verifier's client tools (halab/verify/sampler.py), run as the labs run them
(their source on a Python's stdin) against a local HTTP server that plays a backend: what they
print is what every row built on them reads. Fast tier: loopback only, about 3 s."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from halab.verify import probes


class LocalTransport:
    """The verifier's Transport, on this host: `spawn` runs the tool here."""

    python = sys.executable

    def run(self, host, cmd, *, input=None, check=True, timeout=60.0):
        return subprocess.run(cmd, input=input, check=check, timeout=timeout, capture_output=True, text=True)

    def spawn(self, host, cmd):
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


class Page(BaseHTTPRequestHandler):
    """A lab backend as the sampler may meet it: the page (`backend=NAME client=ADDRESS`), a page
    without those words, or a connection closed before any answer (the server's `mode`)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "close":
            self.close_connection = True
            return
        body = (f"backend=www1 client={self.client_address[0]}\n" if mode == "page" else "It works!\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    srv.mode = "page"  # type: ignore[attr-defined]
    srv.daemon_threads = True
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _sample(url: str) -> list[tuple[bool, str | None, str | None]]:
    """Three requests as the labs send them; each one's (ok, backend, why)."""
    args = ["--interval", "0.05", "--count", "3", "--timeout", "2"]
    samples = probes.sample(LocalTransport(), "here", url, ["127.0.0.1"], *args).finish(timeout=30)
    return [(s.ok, s.backend, s.why) for s in samples]


def test_the_sampler_names_why_a_request_failed(server):
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    assert _sample(url) == [(True, "www1", None)] * 3
    server.mode = "other page"
    assert _sample(url) == [(False, None, "answer: no page")] * 3
    server.mode = "close"  # connected, then closed without an answer
    assert _sample(url) == [(False, None, "answer: RemoteDisconnected")] * 3
    server.shutdown()
    server.server_close()  # nothing listens there now
    assert _sample(url) == [(False, None, "connect: ConnectionRefusedError")] * 3


def test_the_holder_watch_counts_each_move_from_complete_rounds_only():
    watch = probes.HolderWatch.__new__(probes.HolderWatch)  # its rounds, without its thread
    watch.samples = [(0.0, ["lb1"]), (1.0, ["lb1", "lb2"]), (2.0, ["lb2"]), (3.0, []), (4.0, ["lb1"]), (5.0, ["lb2"])]
    watch.complete = [True, True, True, True, True, False]  # lb1 did not answer the last round
    assert watch.moves(0.0) == [(2.0, "lb2"), (4.0, "lb1")]
    assert watch.moves(1.5) == [(4.0, "lb1")]


def test_the_longest_stretch_without_an_answer_spans_failures_and_silence():
    def at(start: float, ok: bool) -> probes.Sample:
        return probes.Sample(start=start, end=start + 0.1, ok=ok, backend=None, seen=None, source="c", why=None)

    samples = [at(1.0, True), at(2.0, False), at(7.0, False), at(12.0, True), at(13.0, True)]
    assert round(probes.no_answer_stretch(samples, 0.0, 14.0), 1) == 11.0  # 1.1 to 12.1
    assert round(probes.no_answer_stretch(samples, 0.0, 30.0), 1) == 16.9  # silence after the last
    assert probes.no_answer_stretch([at(1.0, False)], 0.0, 5.0) == 5.0  # never answered


def test_an_ecmp_drill_keeps_its_sessions_only_if_some_moved_and_none_was_lost():
    """A drill whose `ss` found no session on the nodes that stayed, or whose rehashes moved none
    of them, proves nothing of the second chance: not kept."""
    from halab.verify.ecmp_sessions import Drill, Event

    found = Drill(leave=Event(58, 14, 0), back=Event(146, 49, 0), own=32)
    assert found.kept
    assert (
        found.text()
        == "at the leave 58/58 kept (14 moved by the router), at the return 146/146 kept (49 moved by the router)"
    )
    assert not Drill(leave=Event(58, 14, 0), back=Event(146, 49, 3)).kept
    assert not Drill(leave=Event(0, 0, 0), back=Event(0, 0, 0)).kept
    assert not Drill(leave=Event(58, 0, 0), back=Event(146, 0, 0)).kept  # nothing moved: nothing proven
    failed = Drill(failed="lb-x's route never withdrawn")
    assert not failed.kept and failed.text() == "lb-x's route never withdrawn"
