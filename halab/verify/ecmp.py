"""Rows of ecmp mode (issue #24, docs/ecmp.md): what the router sees (BGP sessions, BFD, one path
per serving load balancer), how flows share the load balancers, and how fast a load balancer
leaves the router's paths when its haproxy dies or its link is cut, and comes back.

The router's view is read on the router itself (the namespace lab's router node; the host where
the lab's FRR runs): `vtysh` for the sessions, and a poller of the kernel's route to the VIP for
the timings, on the same clock as the verifier's host (docs/ecmp.md)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from halab.core.model import Lab, Node
from halab.verify import drills
from halab.verify.backends import haproxy_stat
from halab.verify.probes import end_group, sample, start_client, wait_until
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext

# Within ±15 % of an even share (issue #24). From 1200 connections (each its own source port, over
# every client address): with 3 load balancers a share's standard deviation is 16 connections of
# 400 expected, so the ±60 allowed is 3.7 of them; with 600 it would be 2.6, and a fair hash
# would fail the row in about 3 runs of 100.
SHARE_TOLERANCE = 0.15
SHARE_CONNECTIONS = 1200
# The ceilings on a real machine: haproxy's death seen by the watcher at once (pidfd), the
# route withdrawn through zebra and bgpd on both ends (50 ms process queues); a dead link seen by
# BFD after interval x multiplier, and the rest of that path.
KILLED_CEILING = 0.3
BFD_SLACK = 0.2

# Run on the router: each change of the VIP's next hops, as [wall clock, [gateways]], polled
# every 10 ms for a bounded time (an `ip` per poll: the drills' few seconds only).
ROUTE_WATCH = r"""
import json, subprocess, sys, time
vip, until = sys.argv[1], time.time() + float(sys.argv[2])
last = None
while time.time() < until:
    out = subprocess.run(["ip", "-j", "route", "show", vip + "/32"], capture_output=True, text=True).stdout
    hops = sorted(h["gateway"] for r in json.loads(out or "[]") for h in (r.get("nexthops") or [r]) if "gateway" in h)
    if hops != last:
        print(json.dumps([time.time(), hops]), flush=True)
        last = hops
    time.sleep(0.01)
"""


def _vtysh(transport: Transport, host: str, command: str) -> dict:
    out = transport.run(host, ["vtysh", "-c", command], check=False, timeout=20).stdout
    try:
        return json.loads(out or "{}")
    except ValueError:
        return {}


def check_bgp(transport: Transport, ctx: VerifyContext) -> list[Row]:
    lab, router = ctx.lab, ctx.router
    if router is None:
        return [skip("BGP: every load balancer's session Established", "no router host to ask")]
    peers = _vtysh(transport, router, "show bgp ipv4 unicast summary json").get("peers", {})
    bfd = _vtysh(transport, router, "show bfd peers json")
    bfd_up = (
        {p.get("peer") for p in bfd if isinstance(p, dict) and p.get("status") == "up"}
        if isinstance(bfd, list)
        else set()
    )
    rows = []
    for lb in lab.load_balancers:
        p = peers.get(str(lb.address), {})
        state, got = p.get("state", "absent"), p.get("pfxRcd", 0)
        rows.append(
            Row(
                f"BGP: {lb.name}'s session Established, announcing the VIP",
                state == "Established" and got == 1,
                f"{state}, {got} prefix(es)",
            )
        )
        if lab.bgp is not None and lab.bgp.bfd is not None:
            rows.append(
                Row(
                    f"BFD: {lb.name}'s peer up ({lab.bgp.bfd.interval_ms} ms x {lab.bgp.bfd.multiplier})",
                    str(lb.address) in bfd_up,
                    "up" if str(lb.address) in bfd_up else "not up",
                )
            )
    got = hops(transport, router, str(lab.vip))
    want = sorted(str(lb.address) for lb in lab.load_balancers)
    rows.append(
        Row(f"the router spreads {lab.vip} over every load balancer", got == want, ", ".join(got) or "no route")
    )
    return rows


def hops(transport: Transport, router: str, vip: str) -> list[str]:
    """The router's next hops for the VIP now, sorted."""
    out = transport.run(router, ["ip", "-j", "route", "show", f"{vip}/32"], check=False).stdout
    routes = json.loads(out or "[]")
    return sorted(h["gateway"] for r in routes for h in (r.get("nexthops") or [r]) if "gateway" in h)


def _frontend_sessions(transport: Transport, lb: str, frontend: str) -> int:
    """haproxy's session total (stot) of one frontend on one load balancer."""
    rows = haproxy_stat(transport, lb)
    return next((int(r[7] or 0) for r in rows if r[0] == frontend and r[1] == "FRONTEND"), 0)


def check_ecmp_shares(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """New connections from many client address and port pairs: each load balancer carries an
    even share, within SHARE_TOLERANCE (the router's L4 hash)."""
    lab = ctx.lab
    svc = lab.services[0]
    frontend = f"ft_{svc.name}"
    n = len(lab.load_balancers)
    name = (
        f"{svc.name}: {SHARE_CONNECTIONS} new connections share the {n} load balancers "
        f"within ±{SHARE_TOLERANCE:.0%} of even"
    )
    before = {lb.name: _frontend_sessions(transport, lb.name, frontend) for lb in lab.load_balancers}
    samples = sample(
        transport,
        ctx.client,
        lab.url(svc),
        list(ctx.client_sources),
        "--count",
        str(SHARE_CONNECTIONS),
        "--interval",
        "0.005",
        "--timeout",
        "3",
    ).finish(timeout=300)
    got = {lb.name: _frontend_sessions(transport, lb.name, frontend) - before[lb.name] for lb in lab.load_balancers}
    failed = sum(not s.ok for s in samples)
    even = SHARE_CONNECTIONS / n
    ok = failed == 0 and all(abs(c - even) <= SHARE_TOLERANCE * even for c in got.values())
    pairs = len({(s.source, s.start) for s in samples})
    fig = (
        ", ".join(f"{k} {v}" for k, v in got.items())
        + f" (even: {even:.0f}); {failed} failed; from {len(ctx.client_sources)} addresses, {pairs} connections"
    )
    return [Row(name, ok, fig)]


class RouteWatch:
    """The router's next hops for the VIP, each change with its time on this process's monotonic
    clock (the router's wall clock mapped through ours: the same host's clock in both labs)."""

    def __init__(self, transport: Transport, router: str, vip: str, seconds: float):
        self.offset = time.monotonic() - time.time()
        self.changes: list[tuple[float, list[str]]] = []
        self.proc, self.reader = start_client(transport, router, ROUTE_WATCH, [vip, str(seconds)], self._read)

    def _read(self, out) -> None:
        for line in out:
            try:
                wall, hops = json.loads(line)
            except ValueError:
                continue
            self.changes.append((wall + self.offset, hops))

    def first(self, since: float, pred) -> float | None:
        return next((t for t, hops in list(self.changes) if t >= since and pred(hops)), None)

    def stop(self) -> None:
        """The poller's whole process group ended (a SIGTERM to nsenter alone leaves it polling)."""
        end_group(self.proc, self.reader)


@dataclass
class Withdrawal:
    """One drill at the router: when the fault took effect, and how long after it the node's
    path was gone; when the restore's call ended, and how long after it the path was back (0:
    during the call; None: never, within the bound). Times on this process's monotonic clock."""

    at: float
    took: float | None
    restored_at: float
    back: float | None


def withdrawal(transport: Transport, ctx: VerifyContext, lb: Node, drill: str) -> Withdrawal:
    """One fault of drills.catalogue on `lb`, timed at the router from the fault's own timestamp
    to the first change of the VIP's next hops without it; then its restore, to its path back."""
    lab, router, bound = ctx.lab, ctx.router, ctx.drill_bound
    assert router is not None
    addr = str(lb.address)
    fault, restore = drills.catalogue(transport, lab, bound)[drill]
    watch = RouteWatch(transport, router, str(lab.vip), 2 * bound + 60)
    try:
        time.sleep(0.5)  # its first line: the paths before the fault
        at = fault(lb.name)
        wait_until(lambda: watch.first(at, lambda h: addr not in h) is not None, bound, 0.05)
        gone = watch.first(at, lambda h: addr not in h)
        restore(lb.name)
        restored_at = time.monotonic()
        # its path back: the first change with it since it went (it may come back while the
        # restore's call runs: then 0 s after it); a session comes back within its connect
        # timer and BFD's
        since = at if gone is None else gone

        def returned() -> float | None:
            return watch.first(since, lambda h: addr in h)

        wait_until(lambda: returned() is not None, bound + 30, 0.1)
        back = returned()
    finally:
        watch.stop()
    took = None if gone is None else gone - at
    return Withdrawal(at, took, restored_at, None if back is None else max(0.0, back - restored_at))


def plan(lab: Lab) -> list[tuple[Node, str, float, str]]:
    """ecmp mode's drills: haproxy killed on the first load balancer, the link of the second
    cut; each with its ceiling and what takes the node out."""
    assert lab.bgp is not None
    bfd = lab.bgp.bfd
    cut_ceiling = (bfd.detect_seconds if bfd else lab.bgp.hold_seconds) + BFD_SLACK
    return [
        (lab.load_balancers[0], "haproxy killed", KILLED_CEILING, "its route withdrawn"),
        (
            lab.load_balancers[1 % len(lab.load_balancers)],
            "link cut",
            cut_ceiling,
            "BFD takes it out" if bfd else "its hold timer takes it out",
        ),
    ]


def check_ecmp_failovers(transport: Transport, ctx: VerifyContext, only: tuple[str, ...] = ()) -> list[Row]:
    """haproxy killed on the first load balancer, then the link of the second cut: each leaves
    the router's paths within its ceiling, and comes back once restored. `only`: those drills
    (a mutation test runs the one it breaks)."""
    lab, router = ctx.lab, ctx.router
    if router is None or lab.bgp is None:
        return [skip("ecmp failovers", "no router host to watch")]
    rows = []
    for lb, drill, ceiling, how in plan(lab):
        if only and drill not in only:
            continue
        w = withdrawal(transport, ctx, lb, drill)
        in_time = w.took is not None and (not ctx.timed or w.took <= ceiling)
        limit = f"≤ {ceiling:.2f} s" if ctx.timed else "untimed here"
        rows.append(
            Row(
                f"{drill} on {lb.name}: {how} at the router ({limit})",
                in_time,
                "not withdrawn" if w.took is None else f"{w.took:.2f} s",
            )
        )
        rows.append(
            Row(
                f"restore, {drill} on {lb.name}: back in the router's paths",
                w.back is not None,
                "not back" if w.back is None else f"{w.back:.1f} s after the restore",
            )
        )
    return rows
