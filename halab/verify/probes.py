"""How verify looks at a lab: request samplers on the client hosts (sampler.py) and the VIP's
holders asked on every load balancer (what it does to a node: drills.py). Every wait is
bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from halab.core.model import Lab
from halab.verify.transport import Transport

SAMPLER = (Path(__file__).parent / "sampler.py").read_text()


RECOVERED_AFTER = 10  # consecutive successes that end an outage


PROBE_TIMEOUT = 3.0  # a node that does not answer a probe in this time is counted as not holding


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def start_client(transport: Transport, host: str, script: str, args: list[str], read) -> tuple:
    """A standard-library client script run on a lab host (its text on stdin, so nothing is
    installed there), and a thread reading its output as lines come: `read(stdout)`."""
    proc = transport.spawn(host, [transport.python, "-", *args])
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(script)
    proc.stdin.close()
    reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
    reader.start()
    return proc, reader


def end_group(proc: subprocess.Popen[str], reader: threading.Thread) -> None:
    """Ends a client spawned in a session of its own: its whole process group (TERM, then KILL),
    so that nothing is left holding the pipe its reader waits on; then the reader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    reader.join(timeout=5)


@dataclass
class Sample:
    start: float
    end: float
    ok: bool
    backend: str | None
    seen: str | None
    source: str
    why: str | None = None  # a failure's phase and error, as the sampler names them


@dataclass
class Sampler:
    """sampler.py running on a client host, its samples collected as they come."""

    transport: Transport
    host: str
    args: list[str]
    samples: list[Sample] = field(default_factory=list)
    timeout: float = 0.0  # each request's, as the sampler says in its first line

    def __post_init__(self) -> None:
        self.proc, self.reader = start_client(self.transport, self.host, SAMPLER, self.args, self._read)

    def _read(self, out) -> None:
        """The first line is the client host's clock: the offset to this one's (a few ms off at
        most, the line's transit time) puts every sample on the verifier's clock."""
        offset = 0.0
        for line in out:
            item = json.loads(line)
            if item[0] == "clock":
                offset, self.timeout = time.monotonic() - item[1], item[2]
                continue
            start, end, *rest = item
            self.samples.append(Sample(start + offset, end + offset, *rest))

    def since(self, t0: float) -> list[Sample]:
        """The samples sent from t0 on, in the order they were sent (they end in any order: the
        sampler does not wait for one answer before it sends the next)."""
        return sorted((s for s in list(self.samples) if s.start >= t0), key=lambda s: s.start)

    def settle(self, t_end: float) -> None:
        """Waits until every request sent before t_end has reported: the sampler reports a
        request when it ends, and one that fails takes its timeouts to end (connect, then the
        answer). A window read earlier misses exactly the failures it is there to count."""
        time.sleep(max(0.0, t_end + 2 * self.timeout + 0.1 - time.monotonic()))

    def recovered_since(self, t0: float, n: int = RECOVERED_AFTER) -> bool:
        recent = self.since(t0)[-n:]
        return len(recent) == n and all(s.ok for s in recent)

    def finish(self, timeout: float = 130.0) -> list[Sample]:
        """Waits for a bounded run to end by itself (--count/--duration)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return list(self.samples)

    def stop(self, settle: bool = True) -> list[Sample]:
        """Ends the sampler: its whole process group (spawned in a session of its own), so that
        nothing is left sending requests or holding the pipe the reader waits on. First, unless
        the caller has read its windows already, every request sent so far reports (`settle`):
        a request still failing when the sampler is killed would be lost, not counted."""
        if settle:
            self.settle(time.monotonic())
        end_group(self.proc, self.reader)
        return list(self.samples)


def sample(transport: Transport, host: str, target: str, sources: list[str], *extra: str) -> Sampler:
    args = ["--url", target]
    for s in sources:
        args += ["--source", s]
    return Sampler(transport, host, args + list(extra))


def _ask_holds(transport: Transport, lab: Lab, name: str, found: dict[str, bool]) -> None:
    """Whether one load balancer has the VIP on an interface, into found[name]; nothing when it
    does not answer in time (its link cut): no client reaches it either."""
    try:
        out = transport.run(name, ["ip", "-4", "-o", "addr", "show"], check=False, timeout=PROBE_TIMEOUT).stdout
    except subprocess.TimeoutExpired:
        return
    found[name] = f" inet {lab.vip}/" in out


def holders(transport: Transport, lab: Lab) -> list[str]:
    """The load balancers that have the VIP on an interface, asked all at once."""
    found: dict[str, bool] = {}
    threads = [threading.Thread(target=_ask_holds, args=(transport, lab, lb.name, found)) for lb in lab.load_balancers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    return [lb.name for lb in lab.load_balancers if found.get(lb.name)]


# How long a round of the holder watch waits for a node's answer at least: far longer than an
# answer takes on a quiet host (tens of ms), far shorter than a takeover. The wait grows to twice
# the slowest recent answer (an emulated guest, or SSH on a loaded host), so a node that answers
# slowly still counts; one that does not answer at all (its link cut, over SSH) counts as not
# holding in that round (no client reaches it either), and delays no round by more.
HOLDER_ANSWER_WAIT = 0.5


def no_holder_stretch(samples: list[tuple[float, list[str]]]) -> float:
    """The longest run of consecutive samples with no holder, from its first to its last."""
    longest, since = 0.0, None
    for ts, held in samples:
        if held:
            since = None
            continue
        since = ts if since is None else since
        longest = max(longest, ts - since)
    return longest


def no_answer_stretch(samples: list[Sample], start: float, end: float) -> float:
    """The longest time in [start, end] between two successful answers (or the window's edge):
    how long the service was down for every client. A count of failed requests cannot tell: a
    request that fails on a timeout takes that long, so an outage makes few of them."""
    ends = sorted(s.end for s in samples if s.ok and start <= s.end <= end)
    edges = [start, *ends, end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


class HolderWatch:
    """Samples the VIP's holders in the background, in rounds 50 ms apart: every load balancer
    asked at once, each round a snapshot of the answers that came within the round's wait (so
    no round mixes an old answer from one node with a new one from another). A node still
    answering an earlier round is not asked again, and counts as not holding. Every answer, in
    time or late, is also kept with the time it came: when the VIP reached another node is
    read from those (`moved`), whatever the rounds missed.

    A VRRP transition can show two holders in one sample: the new master adds the address
    milliseconds before the old one's removal is seen, or the two reads straddle it. Split brain
    is two holders *sustained*: in two consecutive samples, at least 50 ms."""

    def __init__(self, transport: Transport, lab: Lab, every: float = 0.05):
        self.samples: list[tuple[float, list[str]]] = []
        self.complete: list[bool] = []  # per sample: every node answered within the round's wait
        self.answers: list[tuple[float, str, bool]] = []  # (when it came, node, holds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(transport, lab, every), daemon=True)
        self._thread.start()

    def _run(self, transport: Transport, lab: Lab, every: float) -> None:
        names = [lb.name for lb in lab.load_balancers]
        took: list[float] = []  # how long recent answers took
        asking: dict[str, threading.Thread] = {}

        def ask(name: str, answers: dict[str, bool]) -> None:
            asked = time.monotonic()
            _ask_holds(transport, lab, name, answers)
            if name in answers:
                now = time.monotonic()
                took.append(now - asked)
                self.answers.append((now, name, answers[name]))

        while not self._stop.is_set():
            answers: dict[str, bool] = {}  # this round's: a late answer lands in its own round's
            for n in names:
                if n not in asking or not asking[n].is_alive():
                    asking[n] = threading.Thread(target=ask, args=(n, answers), daemon=True)
                    asking[n].start()
            wait = min(PROBE_TIMEOUT, max(HOLDER_ANSWER_WAIT, 4 * every, 2 * max(took[-20:], default=0.0)))
            deadline = time.monotonic() + wait
            for n in names:
                asking[n].join(max(0.0, deadline - time.monotonic()))
            # the time the answers are in: the state they show was reached by then at the latest
            answered = dict(answers)
            self.samples.append((time.monotonic(), [n for n in names if answered.get(n)]))
            self.complete.append(len(answered) == len(names))
            self._stop.wait(every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=PROBE_TIMEOUT + 5)

    def most(self, start: float, end: float = float("inf")) -> tuple[int, int] | None:
        """(most holders in one sample, most holders sustained over two consecutive samples);
        None when the window holds fewer than two samples: nothing proves there was no split."""
        window = [len(h) for ts, h in list(self.samples) if start <= ts <= end]
        if len(window) < 2:
            return None
        return max(window), max(min(a, b) for a, b in zip(window, window[1:], strict=False))

    def longest_without_holder(self, start: float, end: float = float("inf")) -> float:
        """The longest stretch in which no node held the VIP, read from the rounds every node
        answered: a node too slow to answer (a loaded emulated guest, over SSH) makes its round
        unknown, not a round without a holder."""
        rounds = zip(list(self.samples), list(self.complete), strict=False)
        return no_holder_stretch([(ts, h) for (ts, h), full in rounds if full and start <= ts <= end])

    def moves(self, start: float, end: float = float("inf")) -> list[tuple[float, str]]:
        """Each time the VIP reached another single holder, (when, the new holder), read from
        the rounds every node answered: a roll-out's planned moves, and any flap between them."""
        out: list[tuple[float, str]] = []
        last = None
        for (ts, held), full in zip(list(self.samples), list(self.complete), strict=False):
            if full and start <= ts <= end and len(held) == 1 and held[0] != last:
                if last is not None:
                    out.append((ts, held[0]))
                last = held[0]
        return out

    def moved(self, start: float, master: str) -> float | None:
        """When a node other than `master` first answered that it holds the VIP, at or after
        start; None if none did."""
        return next((ts for ts, n, holds in list(self.answers) if ts >= start and holds and n != master), None)
