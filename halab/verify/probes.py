"""How verify looks at a lab and acts on it: request samplers on the client hosts (sampler.py),
the VIP's holders asked on every load balancer, and drill actions (scripts/steps/drill.sh,
shipped as a bundle like any step) on one node. Every wait is bounded."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from halab import plan
from halab.model import Lab
from halab.verify.transport import Transport

SAMPLER = (Path(__file__).parent / "sampler.py").read_text()


RECOVERED_AFTER = 10  # consecutive successes that end an outage


PROBE_TIMEOUT = 3.0  # a node that does not answer a probe in this time is counted as not holding


def drill(t: Transport, host: str, *args: str, check: bool = True, timeout: float = 60.0):
    """A drill action (scripts/steps/drill.sh) on one host, from a bundle like any step."""
    bundle = plan.Step(host, "drill", "drill.sh", args).bundle()
    return t.run(host, ["bash", "-s"], input=bundle, check=check, timeout=timeout)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


@dataclass
class Sample:
    start: float
    end: float
    ok: bool
    backend: str | None
    seen: str | None
    source: str


@dataclass
class Sampler:
    """sampler.py running on a client host, its samples collected as they come."""

    t: Transport
    host: str
    args: list[str]
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = self.t.spawn(self.host, [self.t.python, "-", *self.args])
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(SAMPLER)
        self.proc.stdin.close()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        """The first line is the client host's clock: the offset to this one's (a few ms off at
        most, the line's transit time) puts every sample on the verifier's clock."""
        assert self.proc.stdout is not None
        offset = 0.0
        for line in self.proc.stdout:
            item = json.loads(line)
            if item[0] == "clock":
                offset = time.monotonic() - item[1]
                continue
            start, end, *rest = item
            self.samples.append(Sample(start + offset, end + offset, *rest))

    def since(self, t0: float) -> list[Sample]:
        return [s for s in list(self.samples) if s.start >= t0]

    def recovered_since(self, t0: float, n: int = RECOVERED_AFTER) -> bool:
        recent = self.since(t0)[-n:]
        return len(recent) == n and all(s.ok for s in recent)

    def finish(self, timeout: float = 130.0) -> list[Sample]:
        """Waits for a bounded run to end by itself (--count/--duration)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return list(self.samples)

    def stop(self) -> list[Sample]:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.reader.join(timeout=5)
        return list(self.samples)


def sample(t: Transport, host: str, target: str, sources: list[str], *extra: str) -> Sampler:
    args = ["--url", target]
    for s in sources:
        args += ["--source", s]
    return Sampler(t, host, args + list(extra))


def holders(t: Transport, lab: Lab) -> list[str]:
    """The load balancers that have the VIP on an interface, asked all at once."""
    found: dict[str, bool] = {}

    def ask(name: str) -> None:
        try:
            out = t.run(name, ["ip", "-4", "-o", "addr", "show"], check=False, timeout=PROBE_TIMEOUT).stdout
        except subprocess.TimeoutExpired:  # unreachable (its link cut): no client reaches it either
            return
        found[name] = f" inet {lab.vip}/" in out

    threads = [threading.Thread(target=ask, args=(lb.name,)) for lb in lab.load_balancers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    return [lb.name for lb in lab.load_balancers if found.get(lb.name)]


class HolderWatch:
    """Samples the VIP's holders in the background, every node asked at once (50 ms apart).

    A VRRP transition can show two holders in one sample: the new master adds the address
    milliseconds before the old one's removal is seen, or the two reads straddle it. Split brain
    is two holders *sustained*: in two consecutive samples, at least 50 ms."""

    def __init__(self, t: Transport, lab: Lab, every: float = 0.05):
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(t, lab, every), daemon=True)
        self._thread.start()

    def _run(self, t: Transport, lab: Lab, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), holders(t, lab)))
            self._stop.wait(every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def most(self, start: float, end: float = float("inf")) -> tuple[int, int]:
        """(most holders in one sample, most holders sustained over two consecutive samples)."""
        window = [len(h) for ts, h in list(self.samples) if start <= ts <= end]
        sustained = [min(a, b) for a, b in zip(window, window[1:], strict=False)]
        return max(window, default=0), max(sustained, default=max(window, default=0))
