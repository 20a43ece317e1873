"""The measurements, each on a running namespace lab (or, for program cost, on nothing)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from halab.core import config
from halab.verify import drills, reload, vrrp
from halab.verify.transport import Transport, VerifyContext


@dataclass
class Spread:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values)) if values else cls(0, 0, 0, 0)

    def text(self, unit: str = "s", digits: int = 2) -> str:
        """Median (min–max, n); a trial that never recovered counts as ∞."""

        def num(x: float) -> str:
            return "∞" if math.isinf(x) else f"{x:.{digits}f}"

        u = f" {unit}" if unit else ""
        return f"{num(self.median)}{u} ({num(self.low)}–{num(self.high)}, n={self.n})"


@dataclass
class FaultResult:
    seconds: Spread
    failed: Spread
    restore_seconds: Spread
    restore_failed: Spread
    takeover: Spread  # from the fault to the new master's own record of its MASTER state
    max_holders: int  # sustained (two consecutive samples, 50 ms apart)
    max_holders_one_sample: int
    errors: list[str]
    example: drills.Drill | None  # one trial's samples, for the chart


def takeover(transport: Transport, d: drills.Drill) -> float | None:
    """Seconds from the fault to the moment the new master logged its MASTER state (keepalived's
    notify hook, which starts a few milliseconds after the transition): the VIP's move itself,
    without a client's sampling. Nodes of the namespace lab share this host's clock."""
    if len(d.after_fault) != 1 or d.after_fault[0] == d.master:
        return None
    fault_epoch = d.t_fault + time.time() - time.monotonic()
    return next((at - fault_epoch for at in vrrp.master_times(transport, d.after_fault[0]) if at >= fault_epoch), None)


# The drills' client: a request every 10 ms (the sampler does not wait for one answer to send
# the next), each given 0.3 s.
REQUEST_INTERVAL = 0.01
# A fault the profile has not recovered from in this many trials is not tried again: each such
# trial costs the whole bound (20 s), and the profile has no check that sees the fault.
GIVE_UP_AFTER = 2


def failovers(transport: Transport, ctx: VerifyContext, trials: int, log) -> dict[str, FaultResult]:
    out = {}
    for name, (fault, restore) in drills.catalogue(transport, ctx.lab).items():
        runs, errors, moves = [], [], []
        for i in range(trials):
            if i == GIVE_UP_AFTER and not any(d.ok for d in runs):
                errors.append(f"not tried again after {i} trials that never recovered")
                break
            d = drills.run(transport, ctx, fault, restore)
            if isinstance(d, str) or not d.ok:
                errors.append(d if isinstance(d, str) else f"trial {i + 1}: no recovery within the bound")
                if isinstance(d, str):
                    continue
            if d.split is None or d.split_restore is None:
                errors.append(f"trial {i + 1}: no holder samples in a window (split brain not ruled out)")
            runs.append(d)
            if (moved := takeover(transport, d)) is not None:
                moves.append(moved)
            log(f"    {name} #{i + 1}: {d.out.seconds:.2f} s, {d.out.failed} failed, VIP moved in {moved} s")
        out[name] = FaultResult(
            takeover=Spread.of(moves),
            seconds=Spread.of([d.out.seconds for d in runs]),
            failed=Spread.of([float(d.out.failed) for d in runs]),
            restore_seconds=Spread.of([d.back_out.seconds for d in runs]),
            restore_failed=Spread.of([float(d.back_out.failed) for d in runs]),
            max_holders=max([w[1] for d in runs for w in (d.split, d.split_restore) if w], default=0),
            max_holders_one_sample=max([w[0] for d in runs for w in (d.split, d.split_restore) if w], default=0),
            errors=errors,
            example=runs[len(runs) // 2] if runs else None,
        )
    return out


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time per request, in ms, of each role's processes (kernel work included: a veth
    # delivers in the sender's context): client (wrk), load balancers, backends
    cpu_ms: dict[str, float] = field(default_factory=dict)


# CPU time (user + system, in clock ticks) of every process of a node (its own PID namespace):
# the fields after the command name, whose parentheses may hold spaces
CPU_TICKS = "cat /proc/[0-9]*/stat 2>/dev/null | sed 's/.*) //' | awk '{t += $12 + $13} END {print t + 0}'"


def _cpu_seconds(transport: Transport, ctx: VerifyContext) -> dict[str, float]:
    lab = ctx.lab
    roles = {"load balancers": [n.name for n in lab.load_balancers], "backends": [n.name for n in lab.backends]}
    tick = os.sysconf("SC_CLK_TCK")
    return {
        r: sum(int(transport.run(h, CPU_TICKS).stdout.strip() or 0) for h in hosts) / tick for r, hosts in roles.items()
    }


def measured_wrk(transport: Transport, ctx: VerifyContext, target: str, close: bool, seconds: int) -> WrkResult:
    """wrk, and the CPU each role spent per request while it ran."""
    before = _cpu_seconds(transport, ctx)
    w = wrk(transport, ctx, target, close, seconds)
    after = _cpu_seconds(transport, ctx)
    requests = max(1.0, w.rps * seconds)
    w.cpu_ms.update({r: 1000 * (after[r] - before[r]) / requests for r in before})
    return w


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


# after wrk, the CPU ticks of the shell's waited-for children (wrk): cutime + cstime
WRK_CPU = "; echo \"wrk cpu ticks $(sed 's/.*) //' /proc/$$/stat | awk '{print $14 + $15}')\""


def wrk(
    transport: Transport,
    ctx: VerifyContext,
    target: str,
    close: bool,
    seconds: int,
    threads: int = 1,
    connections: int = 8,
) -> WrkResult:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "2s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = transport.run(ctx.client, ["bash", "-c", shlex.join([*cmd, target]) + WRK_CPU], timeout=seconds + 30).stdout
    w = parse_wrk(out)
    ticks = re.search(r"^wrk cpu ticks (\d+)$", out, re.M)
    if ticks:
        w.cpu_ms["client"] = 1000 * int(ticks.group(1)) / os.sysconf("SC_CLK_TCK") / max(1.0, w.rps * seconds)
    return w


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return WrkResult(rps, _ms(lat["50"]), _ms(lat["99"]), errors)


def data_plane(transport: Transport, ctx: VerifyContext, seconds: int) -> dict[str, dict[str, WrkResult]]:
    """Short HTTP requests through the VIP and straight to a backend, new connection per
    request and keep-alive, measured one after the other in the same run, each path from its
    own client address."""
    lab = ctx.lab
    backend = lab.pool(lab.services[0])[0]  # one that serves the service measured
    # wrk sends from one address: at thousands of new connections per second its ~28k ephemeral
    # ports all sit in TIME_WAIT within seconds, and then each destination gets ~470 connections/s
    # (the ports TIME_WAIT frees), whatever the path. A load generator reuses them.
    transport.run(ctx.client, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
    # The direct path sends from another address than the VIP path: the backend keeps the load
    # balancer's transparent connections (from the client's own address) in TIME_WAIT, and a
    # direct SYN on one of those tuples carries the client's TCP timestamps, not the load
    # balancer's: it looks old, is not answered, and waits 1 s to be sent again (~150 requests/s).
    direct = (
        f"ip -4 route replace {backend.address}/32 via $(ip -4 route show default | awk '{{print $3}}') "
        f"src {ctx.client_sources[-1]}"
    )
    paths = (("through the VIP", f"http://{lab.vip}/", None),
             (f"straight to {backend.name}", f"http://{backend.address}/", direct))  # fmt: skip
    out: dict[str, dict[str, WrkResult]] = {}
    try:
        for name, url, route in paths:
            if route:
                transport.run(ctx.client, route)
            out[name] = {
                mode: measured_wrk(transport, ctx, url, mode == "new connection per request", seconds)
                for mode in ("new connection per request", "keep-alive")
            }
    finally:
        transport.run(ctx.client, ["ip", "-4", "route", "del", f"{backend.address}/32"], check=False)
    return out


@dataclass
class Soak:
    """VRRP state changes on a lab left alone (no fault injected), idle or under load: with
    timers short enough, a CPU stall alone moves the VIP (a flap)."""

    seconds: float
    changes: dict[str, int]  # per load balancer
    load: WrkResult | None  # the load through the VIP all along, if any


def soak(transport: Transport, ctx: VerifyContext, seconds: int, loaded: bool) -> Soak:
    before = vrrp.state_changes(transport, ctx.lab)
    t0 = time.monotonic()
    load = None
    if loaded:  # new connections through the VIP, as fast as they go
        transport.run(ctx.client, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
        load = wrk(transport, ctx, f"http://{ctx.lab.vip}/", True, seconds)
    else:
        time.sleep(seconds)
    after = vrrp.state_changes(transport, ctx.lab)
    return Soak(time.monotonic() - t0, {lb: after[lb] - before[lb] for lb in before}, load)


def reloads(transport: Transport, ctx: VerifyContext) -> dict[str, reload.ReloadPhase]:
    return reload.reload_under_load(transport, ctx)


@dataclass
class LabCost:
    """One size of the namespace lab: how long it took to build and to verify, and what its
    nodes hold in memory."""

    backends: int
    up_s: float
    verify_s: float
    verify_failed: int
    lb_mib: float  # proportional set size of one load balancer's processes (mean)
    backend_mib: float  # of one backend's
    host_mib: float  # the host's available memory that the whole lab took

    @property
    def host_mib_per_node(self) -> float:
        return self.host_mib / (self.backends + 2)


# A node's processes' proportional set size (shared pages split between their users), in KiB:
# everything that node runs (its own PID namespace shows only its own).
PSS = "cat /proc/[0-9]*/smaps_rollup 2>/dev/null | awk '/^Pss:/ {kib += $2} END {print kib + 0}'"


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def sized_config(base: dict, backends: int, name: str) -> dict:
    """The base stack with 2 load balancers and N backends on a /24 of its own addresses."""
    cfg = dict(base)
    cfg["halab:network"] = {**(base.get("halab:network") or {}), "name": name, "cidr": "10.99.0.0/16"}
    cfg["halab:vip"] = "10.99.0.10"
    cfg["halab:loadBalancers"] = [{"name": "lb1", "address": "10.99.0.11"}, {"name": "lb2", "address": "10.99.0.12"}]
    cfg["halab:backends"] = [
        {"name": f"www{i}", "address": str(ip_address("10.99.1.0") + i)} for i in range(1, backends + 1)
    ]
    cfg["halab:testClients"] = None
    return {k: v for k, v in cfg.items() if v is not None}


def lab_cost(base: dict, sizes: tuple[int, ...], log) -> list[LabCost]:
    """`netns-lab up`, then `verify --read-only`, for 2 load balancers and N backends, one size
    after the other (each lab down before the next)."""
    from halab.drivers.netns import lab as netns
    from halab.drivers.netns import topology
    from halab.verify import checks, lab_access

    out = []
    for n in sizes:
        topo = topology.build(config.parse(sized_config(base, n, f"bench-n{n}")))
        free = _available_mib()
        try:
            t0 = time.monotonic()
            netns.up(topo, log=lambda _: None)
            t_up = time.monotonic() - t0
            transport, ctx = lab_access.netns_context(topo, read_only=True)
            t0 = time.monotonic()
            rows = checks.verify(transport, ctx)
            t_verify = time.monotonic() - t0
            pss = {h.name: int(transport.run(h.name, PSS).stdout.strip() or 0) / 1024 for h in topo.hosts if h.node}
            taken = free - _available_mib()
        finally:
            netns.down(topo, log=lambda _: None)
        lbs = [pss[lb.name] for lb in topo.lab.load_balancers]
        bes = [pss[b.name] for b in topo.lab.backends]
        out.append(
            LabCost(n, t_up, t_verify, sum(not r.ok for r in rows), statistics.mean(lbs), statistics.mean(bes), taken)
        )
        log(f"lab with {n} backends: up {t_up:.1f} s, verify {t_verify:.1f} s, {out[-1].verify_failed} failed")
    return out


def _program(*args: str, stdin: str = "") -> dict[str, float]:
    """One measurement of halab/bench/program.py, in a fresh interpreter."""
    p = subprocess.run(
        [sys.executable, "-m", "halab.bench.program", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent.parent,
        check=False,
        timeout=300,
    )
    if p.returncode != 0:
        raise RuntimeError(f"halab.bench.program {' '.join(args)}: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.splitlines()[-1])


def program_cost(base: dict, sizes: tuple[int, ...] = (2, 10, 50, 100), runs: int = 3) -> dict[int, dict[str, float]]:
    """For the dev stack grown to N backends, each in a fresh interpreter (halab/bench/program.py):
    the Pulumi program under mocks (as shipped, and with the cyclic collector kept on), its floor
    (as many bare Commands as it has resources), and rendering every host's files. Times are
    medians of `runs` interpreters, taken in turn: this host's speed drifts by 10% within
    minutes, and a program run and its floor are compared under the same drift."""
    out = {}
    stack = json.dumps(base)
    for n in sizes:
        shipped, collecting, floor = [], [], []
        for _ in range(runs):
            shipped.append(_program("program", str(n), stdin=stack))
            collecting.append(_program("program", str(n), "--collect", stdin=stack))
            floor.append(_program("bare", str(shipped[0]["resources"])))
        out[n] = {
            "resources": shipped[0]["resources"],
            "runs": runs,
            "program_s": statistics.median(r["program_s"] for r in shipped),
            "mib": statistics.median(r["mib"] for r in shipped),
            "collect_s": statistics.median(r["program_s"] for r in collecting),
            "collect_mib": statistics.median(r["mib"] for r in collecting),
            # whether the collector was on at the end: off as shipped, on in the comparison
            "collector_on": any(r["collector_on"] for r in shipped),
            "collect_collector_on": all(r["collector_on"] for r in collecting),
            "bare_s": statistics.median(r["bare_s"] for r in floor),
            "bare_resources": floor[0]["resources"],
            **_program("render", str(n), stdin=stack),
        }
    return out


def state_size(base: dict, sizes: tuple[int, ...] = (2, 20, 100)) -> dict[int, dict[str, float]]:
    """For the dev stack grown to N backends: the size of the Pulumi state the program makes, under
    mocks (halab/bench/state.py), and the step bundles' share of it. The same bytes on every run."""
    stack = json.dumps(base)
    return {n: _program("state", str(n), stdin=stack) for n in sizes}
