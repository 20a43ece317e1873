"""What `verify` proves, one row per claim with the figure that backs it.

Every probe and every fault is a command on one lab host, through a `Transport`: requests come
from the client hosts (sampler.py), faults hit only the node under test (scripts/steps/drill.sh,
shipped as a bundle like any step), and each drill restores what it broke before it returns.
Every wait is bounded.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from halab import plan, render
from halab.model import Lab, Node, Service
from halab.verify.transport import Site, Transport

SAMPLER = (Path(__file__).parent / "sampler.py").read_text()
ROGUE = (Path(__file__).parent / "rogue.py").read_text()
RECOVERED_AFTER = 10  # consecutive successes that end an outage
PROBE_TIMEOUT = 3.0  # a node that does not answer a probe in this time is counted as not holding
LINK_CUT_DELAY = 0.2  # the link goes down this long after the drill call returns (see drill.sh)


@dataclass
class Row:
    check: str
    ok: bool
    figure: str
    skipped: bool = False  # nothing to prove with this config: neither a pass nor a failure

    @property
    def result(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.ok else "FAIL"


def skip(check: str, why: str) -> Row:
    return Row(check, True, why, skipped=True)


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


def _adverts(t: Transport, host: str) -> tuple[int, int]:
    text = drill(t, host, "vrrp-stats").stdout
    m = re.search(r"Advertisements:\s*Received:\s*(\d+)\s*Sent:\s*(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_vip(t: Transport, site: Site) -> list[Row]:
    lab = site.lab
    held = holders(t, lab)
    rows = [
        Row("exactly one load balancer holds the VIP", len(held) == 1, f"{', '.join(held) or 'none'} holds {lab.vip}")
    ]
    before = {lb.name: _adverts(t, lb.name) for lb in lab.load_balancers}
    time.sleep(3 * lab.vrrp.advert_interval + 0.5)
    after = {lb.name: _adverts(t, lb.name) for lb in lab.load_balancers}
    sent = {n: after[n][1] - before[n][1] for n in before}
    received = {n: after[n][0] - before[n][0] for n in before}
    master = held[0] if len(held) == 1 else None
    backups = [n for n in before if n != master]
    ok = master is not None and sent[master] >= 2 and all(received[b] >= 2 for b in backups)
    figure = f"{master} sent {sent.get(master, 0)}" if master else "no master"
    figure += (
        "".join(f", {b} received {received[b]}" for b in backups) + f" in {3 * lab.vrrp.advert_interval + 0.5:.1f} s"
    )
    rows.append(Row("VRRP adverts flow from the master to every backup", ok, figure))
    return rows


def check_services(t: Transport, site: Site) -> list[Row]:
    """One request per service from each client; the backend must report the client's address."""
    rows = []
    for label, host, source in (
        ("outside client", site.client, site.outside_source),
        ("on-subnet client", site.lan_client, site.lan_source),
    ):
        if host is None or source is None:
            rows.append(skip(f"every service from the {label}: backend sees it", f"no {label} address to send from"))
            continue
        for svc in site.lab.services:
            (s,) = sample(t, host, site.lab.url(svc), [source], "--count", "1", "--timeout", "3").finish()
            ok = s.ok and s.seen == source
            fig = f"{s.backend} saw {s.seen}" if s.ok else "request failed"
            rows.append(Row(f"{svc.name} (:{svc.port}) from the {label} {source}: backend sees it", ok, fig))
    return rows


def check_spread(t: Transport, site: Site) -> list[Row]:
    """Concurrent clients, one connection each held open, reach every backend."""
    lab = site.lab
    backends = {b.name for b in lab.backends}
    sources = list(site.client_sources)
    rows = []
    for svc in lab.services:
        name = f"{svc.name}: concurrent clients spread over every backend ({svc.balance})"
        if len(sources) < len(backends):
            rows.append(skip(name, f"{len(sources)} client address(es) for {len(backends)} backends"))
            continue
        if svc.sticky:  # from empty tables: a previous run's entries would decide instead
            if site.read_only:
                rows.append(skip(name, "read-only: the stick table decides, and clearing it moves clients"))
                continue
            for lb in lab.load_balancers:
                drill(t, lb.name, "haproxy-api", "clear", "table", f"bk_{svc.name}")
        held = sample(t, site.client, lab.url(svc), sources, "--hold", "--timeout", "3").finish()
        got = Counter(s.backend for s in held if s.ok)
        spread_ok = set(got) == backends and sum(got.values()) == len(sources)
        fig = f"{len(sources)} client addresses: " + ", ".join(f"{b} {got.get(b, 0)}" for b in sorted(backends))
        rows.append(Row(name, spread_ok, fig))
    return rows


def check_stickiness(t: Transport, site: Site) -> list[Row]:
    """Each client address reaches the same backend, request after request (changes nothing)."""
    rows = []
    sources = list(site.client_sources)
    for svc in site.lab.services:
        if not svc.sticky:
            continue
        got = sample(
            t, site.client, site.lab.url(svc), sources * 4, "--count", str(4 * len(sources)), "--interval", "0"
        ).finish()
        first = {s.source: s.backend for s in got[: len(sources)]}
        kept = sum(bool(first[src]) and all(s.backend == first[src] for s in got if s.source == src) for src in sources)
        rows.append(
            Row(
                f"{svc.name}: each client address sticks to its backend",
                kept == len(sources),
                f"{kept}/{len(sources)} addresses kept their backend over 3 more requests each",
            )
        )
    return rows


@dataclass
class Outage:
    seconds: float  # from t0 to the first success after the last failure (0: no failure)
    failed: int
    recovered: bool


def outage(samples: list[Sample], t0: float, t_end: float) -> Outage:
    window = [s for s in samples if t0 <= s.start <= t_end]
    failed = [s for s in window if not s.ok]
    if not failed:
        return Outage(0.0, 0, bool(window))
    after = [s for s in window if s.ok and s.start > failed[-1].start]
    return Outage((after[0].end - t0) if after else float("inf"), len(failed), bool(after))


# A fault on a node, or its restore. A fault that takes effect after the call returns says when
# (monotonic time); None: during the call.
Fault = Callable[[str], float | None]


@dataclass
class Drill:
    """One fault on the master and its restore, as measured from a client."""

    master: str
    ok: bool  # the VIP moved to one other node and requests recovered, within the bound
    out: Outage
    after_fault: list[str]  # the VIP's holders once recovered
    split: tuple[int, int]  # most holders while faulted: in one sample, sustained
    back: bool  # restored: the VIP where preemption says, requests recovered
    back_out: Outage
    after_restore: list[str]
    split_restore: tuple[int, int]
    samples: list[Sample]
    t_fault: float


def run_drill(t: Transport, site: Site, fault: Fault, restore: Fault, bound: float = 20.0) -> Drill | str:
    """Fault on the master, then the master restored; a string says why it could not start.
    The VIP's holders are sampled all along: two at once is split brain."""
    lab = site.lab
    held = holders(t, lab)
    if len(held) != 1:
        return f"no single master to fault ({held})"
    master = held[0]
    step = max(0.2, site.holder_interval)  # how often the drill's own waits ask the holders
    args = ["--interval", str(site.request_interval), "--timeout", str(site.request_timeout)]
    args += ["--duration", str(3 * bound + 10)]
    s = sample(t, site.client, lab.url(lab.services[0]), [site.client_sources[0]], *args)
    watch = HolderWatch(t, lab, site.holder_interval)
    try:
        if not wait_until(lambda: s.recovered_since(0.0), 10):
            return "no steady traffic through the VIP before the fault"
        t0 = time.monotonic()
        restored = False
        try:
            t0 = fault(master) or t0
            moved = wait_until(lambda: _single_other(holders(t, lab), master) and s.recovered_since(t0), bound, step)
            t1 = time.monotonic()
            out, new = outage(s.samples, t0, t1), holders(t, lab)
            split = watch.most(t0, t1)
            restore(master)
            restored = True
        finally:
            if not restored:  # interrupted (Ctrl-C) or failed mid-drill: the node is restored all the same
                restore(master)
        # preemption: the master takes the VIP back; nopreempt: it stays where it went
        expected = [master] if lab.vrrp.preempt else new
        back = wait_until(lambda: holders(t, lab) == expected and s.recovered_since(t1), bound, step)
        back_out = outage(s.samples, t1, time.monotonic())
        split_restore = watch.most(t1)
        return Drill(
            master,
            moved and out.recovered,
            out,
            new,
            split,
            back and back_out.recovered,
            back_out,
            holders(t, lab),
            split_restore,
            list(s.samples),
            t0,
        )
    finally:
        watch.stop()
        s.stop()


def _holders_text(split: tuple[int, int]) -> str:
    one, sustained = split
    return f"most holders at once: {sustained}" + (
        f" ({one} in one sample, during the transition)" if one > sustained else ""
    )


def failover_drill(t: Transport, site: Site, name: str, fault: Fault, restore: Fault) -> list[Row]:
    d = run_drill(t, site, fault, restore)
    if isinstance(d, str):
        return [Row(f"failover, {name}", False, d)]
    rule = "takes the VIP back (preemption)" if site.lab.vrrp.preempt else "stays backup (nopreempt)"
    return [
        Row(
            f"failover, {name} on {d.master}",
            d.ok and d.split[1] <= 1,
            f"{d.out.seconds:.2f} s to the first success, {d.out.failed} failed; "
            f"VIP on {', '.join(d.after_fault) or 'none'}; {_holders_text(d.split)}",
        ),
        Row(
            f"restore, {name}: {d.master} {rule}",
            d.back and d.split_restore[1] <= 1,
            f"{d.back_out.seconds:.2f} s to the first success, {d.back_out.failed} failed; "
            f"VIP on {', '.join(d.after_restore) or 'none'}; {_holders_text(d.split_restore)}",
        ),
    ]


def faults(t: Transport, lab: Lab, bound: float = 20.0) -> dict[str, tuple[Fault, Fault]]:
    """The drills' faults on a node, each with what restores it."""
    iface, gw = lab.network.interface, str(lab.network.gateway)

    def action(*args: str) -> Fault:
        def run(host: str) -> None:
            drill(t, host, *args)

        return run

    def cut(host: str) -> float:
        # The node may be reachable through this link only (a VM over SSH): the cut comes just
        # after the call returns, and the node restores the link itself after `bound` + 5 s.
        drill(t, host, "link-down", iface, str(LINK_CUT_DELAY), str(bound + 5), gw)
        return time.monotonic() + LINK_CUT_DELAY

    def uncut(host: str) -> None:
        drill(t, host, "link-up", iface, gw, timeout=bound + 60)  # over SSH: once the link is back

    return {
        "haproxy killed": (action("kill", "haproxy"), action("start", "haproxy")),
        "keepalived killed": (action("kill", "keepalived"), action("start", "keepalived")),
        "link cut": (cut, uncut),
        "clean stop (maintenance)": (action("stop", "keepalived"), action("start", "keepalived")),
    }


def _single_other(held: list[str], master: str) -> bool:
    return len(held) == 1 and held[0] != master


def check_failovers(t: Transport, site: Site) -> list[Row]:
    rows: list[Row] = []
    for name, (fault, restore) in faults(t, site.lab).items():
        if name.startswith("clean stop"):
            continue  # the persistence check does a clean stop already
        rows += failover_drill(t, site, name, fault, restore)
    return rows


def _server_status(t: Transport, lb: str) -> dict[tuple[str, str], str]:
    """(haproxy backend, server) -> health status (UP, DOWN, ...), from lb's runtime API."""
    stat = drill(t, lb, "haproxy-api", "show", "stat", check=False).stdout
    rows = csv.reader(io.StringIO(stat.lstrip("# ")))
    return {(r[0], r[1]): r[17] for r in rows if len(r) > 17 and r[1] not in ("FRONTEND", "BACKEND", "svname")}


def check_backends_up(t: Transport, site: Site) -> list[Row]:
    """Every server of every service is UP on every load balancer (its health check passes)."""
    lab = site.lab
    want = {(f"bk_{svc.name}", b.name) for svc in lab.services for b in lab.backends}
    rows = []
    for lb in lab.load_balancers:
        status = _server_status(t, lb.name)
        down = sorted(f"{bk}/{srv} {status.get((bk, srv), 'absent')}" for bk, srv in want
                      if not status.get((bk, srv), "").startswith("UP"))  # fmt: skip
        fig = f"{len(want) - len(down)}/{len(want)} UP" + (f"; not UP: {', '.join(down)}" if down else "")
        rows.append(Row(f"every backend server passes its health check on {lb.name}", not down, fig))
    return rows


def check_backend_health(t: Transport, site: Site) -> list[Row]:
    """A backend stopped leaves the rotation once health checks see it, with no failed request
    after that; started again, it comes back."""
    lab = site.lab
    svc, victim = lab.services[0], lab.backends[0]
    lbs = [lb.name for lb in lab.load_balancers]

    def status(lb: str) -> str:
        return _server_status(t, lb).get((f"bk_{svc.name}", victim.name), "absent")

    interval = lab.health_check.interval_seconds
    bound = (max(lab.health_check.fall, lab.health_check.rise) + 2) * interval + 5
    s = sample(
        t,
        site.client,
        lab.url(svc),
        list(site.client_sources),
        "--interval",
        "0.05",
        "--timeout",
        "1",
        "--duration",
        str(2 * bound + 15),
    )
    try:
        wait_until(lambda: s.recovered_since(0.0), 10)
        t0 = time.monotonic()
        drill(t, victim.name, "stop", "apache2")
        try:
            down = wait_until(lambda: all(status(lb).startswith("DOWN") for lb in lbs), bound, 0.2)
            t_detect = time.monotonic()
            time.sleep(3)
            t_end = time.monotonic()
        finally:  # started again whatever happens, Ctrl-C included
            t1 = time.monotonic()
            drill(t, victim.name, "start", "apache2")
        before = sum(1 for x in s.since(t0) if not x.ok and x.start < t_detect)
        after = [x for x in s.since(t_detect) if x.start < t_end]
        failed_after = sum(1 for x in after if not x.ok)
        rows = [
            Row(
                f"{victim.name} stopped: out of rotation on every load balancer, no failure after detection",
                down and failed_after == 0 and bool(after),
                f"detected in {t_detect - t0:.1f} s; {failed_after} failed of {len(after)} after, {before} before",
            )
        ]
        up = wait_until(lambda: all(status(lb).startswith("UP") for lb in lbs), bound, 0.2)
        rows.append(
            Row(
                f"{victim.name} started: back in rotation",
                up,
                f"UP on every load balancer after {time.monotonic() - t1:.1f} s",
            )
        )
        return rows
    finally:
        s.stop()


def _vrrp_counters(t: Transport, host: str) -> tuple[int, int]:
    """(VRRP packets dropped by the HALAB-VRRP filter, bad adverts keepalived saw)."""
    rules = t.run(host, ["iptables", "-w", "-L", "HALAB-VRRP", "-v", "-x", "-n"], check=False).stdout
    dropped = sum(int(line.split()[0]) for line in rules.splitlines() if " DROP " in f" {line} ")
    stats = drill(t, host, "vrrp-stats").stdout
    bad = sum(int(n) for n in re.findall(r"(?:Address List|Failure|Type Mismatch|Invalid Type): (\d+)", stats))
    return dropped, bad


def check_vrrp_filter(t: Transport, site: Site) -> list[Row]:
    """A rogue on the lab subnet (a backend: on the segment, not a peer) sends VRRP adverts for
    the VIP's router id at priority 254 (rogue.py): the load balancers drop them before
    keepalived sees them."""
    lab, v = site.lab, site.lab.vrrp
    used = {lab.vip, lab.network.gateway, *(n.address for n in lab.nodes), *lab.test_clients}
    # another address than the VIP: had the filter failed, the rogue still takes no traffic
    decoy = next(a for a in reversed(list(lab.network.cidr.hosts())) if a not in used)
    rogue = lab.node(site.rogue)
    to = [str(lb.address) for lb in lab.load_balancers] if v.unicast else ["224.0.0.18"]
    seconds = max(3.0, 5 * v.advert_interval)
    master = holders(t, lab)
    before = {lb.name: _vrrp_counters(t, lb.name) for lb in lab.load_balancers}
    args = ["--version", str(v.version), "--vrid", str(v.router_id), "--priority", "254"]
    args += ["--interval", str(v.advert_interval), "--source", str(rogue.address), "--address", str(decoy)]
    args += [a for dst in to for a in ("--to", dst)] + ["--seconds", str(seconds)]
    sent = t.run(site.rogue, [t.python, "-", *args], input=ROGUE, check=False, timeout=seconds + 10)
    after = {lb.name: _vrrp_counters(t, lb.name) for lb in lab.load_balancers}
    dropped = {n: after[n][0] - before[n][0] for n in before}
    seen = {n: after[n][1] - before[n][1] for n in before}
    ok = all(d > 0 for d in dropped.values()) and not any(seen.values()) and holders(t, lab) == master
    fig = f"{site.rogue}: {sent.stdout.strip() or sent.stderr.strip()[-200:]}; "
    fig += ", ".join(f"{n}: {dropped[n]} dropped, {seen[n]} reached keepalived" for n in before)
    return [
        Row(
            "VRRP from a non-peer (priority 254) is dropped before keepalived; the master stays",
            ok,
            f"{fig}; VIP still on {', '.join(holders(t, lab)) or 'none'}",
        )
    ]


TRANSITION = re.compile(
    r"^\d{4}-\d\d-\d\dT[\d:,.]+[+-]\d\d:\d\d (\S+) INSTANCE (\S+) (MASTER|BACKUP|FAULT|STOP) priority=\d+$"
)


def check_transition_log(t: Transport, site: Site) -> list[Row]:
    """Every load balancer logged its VRRP state changes (the drills made some), timestamped."""
    counts, ok = {}, True
    for lb in site.lab.load_balancers:
        lines = t.run(lb.name, ["cat", "/var/log/halab-vrrp.log"], check=False).stdout.splitlines()
        good = [m for m in map(TRANSITION.match, lines) if m and m.group(1) == lb.name]
        counts[lb.name] = (len(good), good[-1].group(3) if good else "-")
        ok = ok and bool(good) and len(good) == len(lines)
    fig = ", ".join(f"{n}: {c} changes (now {last})" for n, (c, last) in counts.items())
    return [Row("every VRRP state change is logged, timestamped, on each load balancer", ok, fig)]


def _each_source_once(t: Transport, site: Site, svc: Service) -> dict[str, str | None]:
    sources = list(site.client_sources)
    got = sample(t, site.client, site.lab.url(svc), sources, "--count", str(len(sources)), "--interval", "0").finish()
    return {s.source: s.backend if s.ok else None for s in got}


def check_persistence_across_failover(t: Transport, site: Site) -> list[Row]:
    """Stick tables are replicated (HAProxy peers): after a planned stop of the master's
    keepalived moves the VIP, every client address still reaches the backend it had."""
    lab = site.lab
    name = "persistence survives failover: each client keeps its backend on the new master"
    sticky = [s for s in lab.services if s.sticky]
    held = holders(t, lab)
    if not sticky or len(held) != 1:
        if not sticky:
            return [skip(name, "no sticky service")]
        return [Row(name, False, f"no single master ({held})")]
    svc, master = sticky[0], held[0]
    before = _each_source_once(t, site, svc)
    drill(t, master, "stop", "keepalived")
    try:
        moved = wait_until(lambda: _single_other(holders(t, lab), master), 20, 0.2)
        wait_until(lambda: all(_each_source_once(t, site, svc).values()), 10, 0.5)
        after = _each_source_once(t, site, svc)
        new = holders(t, lab)
    finally:
        drill(t, master, "start", "keepalived")
        # settled as the next check expects: the master back (preemption), or the VIP where it went
        wait_until(lambda: len(holders(t, lab)) == 1 and (not lab.vrrp.preempt or holders(t, lab) == [master]), 20, 0.2)
    kept = sum(1 for src, b in before.items() if b and after.get(src) == b)
    return [
        Row(
            name,
            moved and kept == len(before),
            f"{kept}/{len(before)} client addresses kept their backend; "
            f"VIP moved {master} -> {', '.join(new) or 'none'} (keepalived stopped cleanly)",
        )
    ]


def check_stats_pages(t: Transport, site: Site) -> list[Row]:
    lab = site.lab
    port = lab.haproxy.stats_port
    if not port:
        return [skip("stats pages", "disabled (halab:haproxy.statsPort: 0)")]
    results = []
    asker = site.lan_client or site.client
    for lb in lab.load_balancers:
        u = f"http://{lb.address}:{port}/;csv"
        anon = t.run(asker, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", u], check=False)
        auth = t.run(
            asker,
            ["curl", "-s", "-m", "5", "-K", "-", u],
            input=f'user = "{lab.haproxy.stats_user}:{site.stats_password}"\n',
            check=False,
        )
        ok = anon.stdout == "401" and f"bk_{lab.services[0].name}," in auth.stdout
        results.append((lb.name, ok, anon.stdout, "stats" if f"bk_{lab.services[0].name}," in auth.stdout else "none"))
    fig = ", ".join(f"{n}: {code} without the password, {got} with it" for n, _, code, got in results)
    return [Row("stats page on every load balancer, behind its password", all(r[1] for r in results), fig)]


@dataclass
class ReloadPhase:
    reloads: int
    failed: int
    requests: int


def reload_patience(site: Site) -> float:
    """How long a request may wait out a haproxy reload: 2 s on real machines, longer where a
    reload starves the CPU for seconds (emulated guests). Failing means refused or reset, or that slow."""
    return max(2.0, 5 * site.request_timeout)


# A step run by a check (the haproxy step of the reload drill): as long as `up` would let it run.
# Seconds on a real machine; a minute or more on an emulated guest under load.
STEP_TIMEOUT = 300.0


def reload_under_load(t: Transport, site: Site) -> dict[str, ReloadPhase]:
    """Under steady load, each load balancer's haproxy step runs with the last backend removed,
    then with it added back: a master-worker reload per node and phase. Failures are counted per
    phase (1.5 s after each)."""
    lab = site.lab
    fewer = dataclasses.replace(lab, backends=lab.backends[:-1])
    creds = render.Credentials.placeholder()  # the haproxy step holds no secret

    def haproxy_step(model: Lab, lb: Node) -> plan.Step:
        return next(s for s in plan.host_steps(model, lb, creds) if s.name == "haproxy")

    # bounded by STEP_TIMEOUT per step; stopped as soon as the phases are done
    args = ["--interval", str(site.request_interval / 2), "--timeout", str(reload_patience(site))]
    args += ["--duration", str(4 * STEP_TIMEOUT)]
    s = sample(t, site.client, lab.url(lab.services[0]), list(site.client_sources), *args)
    phases: dict[str, ReloadPhase] = {}
    try:
        wait_until(lambda: s.recovered_since(0.0), 10)
        try:
            for phase, model in (("backend removed", fewer), ("backend added", lab)):
                t0, reloads = time.monotonic(), 0
                for lb in lab.load_balancers:
                    step = haproxy_step(model, lb).bundle()
                    out = t.run(lb.name, ["bash", "-s"], input=step, timeout=STEP_TIMEOUT).stdout
                    reloads += "reloading haproxy" in out
                time.sleep(1.5)
                window = s.since(t0)
                phases[phase] = ReloadPhase(reloads, sum(1 for x in window if not x.ok), len(window))
        finally:
            if "backend added" not in phases:  # interrupted: every node back on the full config
                for lb in lab.load_balancers:
                    step = haproxy_step(lab, lb).bundle()
                    t.run(lb.name, ["bash", "-s"], input=step, check=False, timeout=STEP_TIMEOUT)
    finally:
        s.stop()
    return phases


def check_hitless_reload(t: Transport, site: Site) -> list[Row]:
    lab = site.lab
    if len(lab.backends) < 2:
        return [skip("hitless reloads", "one backend only: none to remove")]
    phases = reload_under_load(t, site)
    reloads = sum(p.reloads for p in phases.values())
    failed = sum(p.failed for p in phases.values())
    total = sum(p.requests for p in phases.values())
    return [
        Row(
            f"haproxy reloads under load ({lab.backends[-1].name} removed, then back): no request fails",
            failed == 0 and reloads == 2 * len(lab.load_balancers) and total > 0,
            f"{reloads} reloads, {failed} failed of {total} requests",
        )
    ]


CHECKS = (
    check_vip,
    check_backends_up,
    check_services,
    check_spread,
    check_stickiness,
    check_vrrp_filter,
    check_stats_pages,
    check_hitless_reload,
    check_backend_health,
    check_persistence_across_failover,
    check_failovers,
    check_transition_log,
)
# The checks that change the lab (faults, reloads, rogue adverts): `--read-only` leaves them
# out, and check_spread then leaves sticky services' tables alone.
CHANGES_THE_LAB = {
    check_vrrp_filter,
    check_hitless_reload,
    check_backend_health,
    check_persistence_across_failover,
    check_failovers,
}


def verify(t: Transport, site: Site, log: Callable[[Row], None] = lambda r: None) -> list[Row]:
    rows: list[Row] = []
    for check in CHECKS:
        if site.read_only and check in CHANGES_THE_LAB:
            continue
        for row in check(t, site):
            log(row)
            rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    w = max(len(r.check) for r in rows)
    lines = [f"{'check':<{w}}  result  figure", f"{'-' * w}  ------  ------"]
    lines += [f"{r.check:<{w}}  {r.result:<6}  {r.figure}" for r in rows]
    return "\n".join(lines)


def run_and_report(t: Transport, site: Site) -> int:
    """Runs every check, printing each result as it comes, then the table and the counts;
    returns the exit status (0: nothing failed)."""
    rows = verify(t, site, log=lambda r: print(f"  {r.result}  {r.check}", flush=True))
    failed = sum(1 for r in rows if not r.ok)
    skipped = sum(1 for r in rows if r.skipped)
    print(f"\n{table(rows)}\n\n{len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0
