"""Long-lived sessions through the VIP (session_client.py on a client host), their events
collected as they come, on the verifier's clock: which sessions opened, failed (when, how) or
ended cleanly by their client, and the longest any answer took."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from halab.verify.probes import end_group, start_client, wait_until
from halab.verify.transport import Transport

CLIENT = (Path(__file__).parent / "session_client.py").read_text()


@dataclass
class Closed:
    at: float
    answers: int
    longest: float  # the longest an answer took, seconds
    foreign: int  # answers that showed the backend another address than the client's


@dataclass
class Sessions:
    """`count` sessions from `source` to `url`, each asking every `interval` seconds, an answer
    slower than `timeout` failing it; `stop_file` on the client host ends them."""

    transport: Transport
    host: str
    url: str
    source: str
    count: int
    stop_file: str
    interval: float = 1.0
    timeout: float = 5.0
    opened: dict[int, float] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)  # each opened session's client port
    failed: dict[int, tuple[float, str, int | None]] = field(default_factory=dict)  # when, why, client port
    closed: dict[int, Closed] = field(default_factory=dict)
    done: bool = False

    def __post_init__(self) -> None:
        self.transport.run(self.host, ["rm", "-f", self.stop_file])
        args = ["--url", self.url, "--source", self.source, "--count", str(self.count)]
        args += ["--interval", str(self.interval), "--timeout", str(self.timeout), "--stop", self.stop_file]
        self.proc, self.reader = start_client(self.transport, self.host, CLIENT, args, self._read)

    def _read(self, out) -> None:
        offset = 0.0
        for line in out:
            kind, *rest = json.loads(line)
            if kind == "clock":
                offset = time.monotonic() - rest[0]
            elif kind == "opened":
                self.opened[rest[0]] = rest[1] + offset
                self.ports[rest[0]] = rest[2]
            elif kind == "failed":
                self.failed[rest[0]] = (rest[1] + offset, rest[2], rest[3])
            elif kind == "closed":
                i, at, answers, longest, foreign = rest
                self.closed[i] = Closed(at + offset, answers, longest, foreign)
            elif kind == "done":
                self.done = True

    def all_open(self, bound: float) -> bool:
        """Every session has had its first answer (and none failed), within `bound` seconds."""
        return wait_until(lambda: len(self.opened) == self.count or bool(self.failed), bound, 0.1) and not self.failed

    def end(self, bound: float) -> bool:
        """Asks every session to close, and waits (bounded) until each has reported; then the
        client is gone, whatever happened."""
        try:
            self.transport.run(self.host, ["touch", self.stop_file])
            return wait_until(lambda: self.done, bound, 0.1)
        finally:
            self.kill()
            self.transport.run(self.host, ["rm", "-f", self.stop_file], check=False)

    def kill(self) -> None:
        end_group(self.proc, self.reader)

    @property
    def lost(self) -> list[int]:
        """Sessions not ended cleanly by their client: failed, or never reported closed."""
        return sorted(i for i in range(self.count) if i not in self.closed)

    def why_lost(self) -> str:
        """The lost sessions, counted by why: "answer: ConnectionResetError x200, ..."."""
        whys: dict[str, int] = {}
        for i in self.lost:
            why = self.failed[i][1] if i in self.failed else "not closed"
            whys[why] = whys.get(why, 0) + 1
        return ", ".join(f"{k} x{v}" for k, v in sorted(whys.items()))

    @property
    def longest(self) -> float:
        return max((c.longest for c in self.closed.values()), default=0.0)

    @property
    def foreign(self) -> int:
        return sum(c.foreign for c in self.closed.values())
