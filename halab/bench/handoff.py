"""The benchmark's figures for the planned hand-off (docs/handoff.md): how many long-lived
connections each fault of the drills' catalogue keeps, per profile; and what the second chance
costs on the default profile: the added time of an answer whose packets the new holder forwards
to the old one, and the host's CPU per forwarded packet."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

from halab.bench.measure import Spread, WrkResult, measured_wrk
from halab.core.model import Lab
from halab.node.paths import PATHS
from halab.verify import drills
from halab.verify.backends import servers_not_up
from halab.verify.handoff import settle
from halab.verify.probes import holders, wait_until
from halab.verify.sessions import Sessions
from halab.verify.transport import Transport, VerifyContext


def second_chance_off(transport: Transport, lab: Lab) -> None:
    """The control profile's switch: on each load balancer, the daemon that routes the
    second-chance table to the previous holder stopped, then the table emptied. keepalived's rule
    to that table stays: a packet it sends there finds no route and goes on to the local table
    (docs/handoff.md)."""
    pidfile, table = PATHS["SECOND_CHANCE_PIDFILE"], lab.packet_path.second_chance_table
    for lb in lab.load_balancers:
        # an empty table does not exist for ip ("FIB table does not exist"): nothing to flush
        script = f'kill "$(cat {pidfile})" && sleep 0.2 && {{ ip -4 route flush table {table} 2>/dev/null || true; }}'
        script += f"; ip -4 route show table {table} 2>/dev/null || true"
        left = transport.run(lb.name, ["bash", "-c", script]).stdout.strip()
        if left:
            raise RuntimeError(f"{lb.name}: table {table} not empty after the second chance was stopped: {left}")


KEPT_SESSIONS = 50  # per fault: long-lived sessions opened through the master before it
SETTLED = 3.0  # seconds the sessions go on after the move: each asks three times more


@dataclass
class Kept:
    kept: int
    total: int
    lost: str  # why the others were lost, counted ("answer: ConnectionResetError x50")


def _file(ctx: VerifyContext, what: str) -> str:
    return f"/tmp/halab-bench-{ctx.lab.network.name}-{what}-{os.getpid()}"


def connections_kept(transport: Transport, ctx: VerifyContext, log) -> dict[str, Kept]:
    """Each fault of the catalogue on the master, with KEPT_SESSIONS sessions open through it:
    how many of them are still answered, and ended cleanly by their client, once the VIP has
    moved. A planned hand-off (keepalived stopped) keeps them; a dead haproxy or a cut link
    cannot."""
    lab, out = ctx.lab, {}
    url = lab.url(next(s for s in lab.services if lab.url(s).startswith("http://")))
    for name, (fault, restore) in drills.catalogue(transport, lab, ctx.drill_bound).items():
        held = holders(transport, lab)
        if len(held) != 1:
            out[name] = Kept(0, 0, f"no single master ({held})")
            continue
        master = held[0]
        s = Sessions(transport, ctx.client, url, ctx.client_sources[0], KEPT_SESSIONS, _file(ctx, "kept"))
        try:
            if not s.all_open(30):
                whys = ", ".join(sorted({f"{why} (port {port})" for _, why, port in s.failed.values()}))
                out[name] = Kept(0, KEPT_SESSIONS, f"{len(s.opened)} opened before the fault; failed: {whys or '-'}")
                continue
            fault(master)
            wait_until(lambda m=master: drills.single_other(holders(transport, lab), m), ctx.drill_bound, 0.2)
            time.sleep(SETTLED)
            s.end(s.timeout + 10)
            out[name] = Kept(s.count - len(s.lost), s.count, s.why_lost())
            log(f"kept through {name}: {out[name].kept}/{s.count} {out[name].lost}")
        finally:
            if not s.done:
                s.kill()
            restore(master)
            settle(transport, ctx.lab, master, ctx.drill_bound)
            # the next fault's sessions open once the master serves again: a master back from a
            # cut link takes the VIP before its checks have called its servers UP (fast profile)
            wait_until(lambda m=master: not servers_not_up(transport, lab, m), ctx.drill_bound, 0.2)
    return out


@dataclass
class ForwardPair:
    """Two wrk runs of keep-alive requests one after the other: its connections held by the
    VIP's holder (direct), then held by the old holder after a planned hand-off at the start of
    the run (forwarded: every packet crosses the new holder first)."""

    direct: WrkResult
    forwarded: WrkResult
    packets: int  # packets the new holder forwarded in the second run (its mark-2 rules' counters)
    seconds: int

    @property
    def packets_per_request(self) -> float:
        return self.packets / max(1.0, self.forwarded.rps * self.seconds)

    @property
    def added_p50_us(self) -> float:
        return 1000 * (self.forwarded.p50_ms - self.direct.p50_ms)

    @property
    def throughput(self) -> float:
        return self.forwarded.rps / self.direct.rps

    @property
    def cpu_per_packet_us(self) -> float:
        """The difference of the CPU per request, every role's processes (client, load balancers,
        backends: a veth delivers in the sender's context, so forwarding is in there), per packet
        forwarded."""
        d, f = (sum(w.cpu_ms.values()) for w in (self.direct, self.forwarded))
        return 1000 * (f - d) / self.packets_per_request if self.packets else math.nan


@dataclass
class ForwardCost:
    """Pairs of runs, direct then forwarded: the figures are their medians, and their spread
    says how far this host's noise reaches."""

    pairs: list[ForwardPair]

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(p, figure) for p in self.pairs])


HANDOFF_AFTER = 0.3  # seconds into the forwarded run: wrk's connections are open by then
FORWARD_PAIRS = 3


def _marked(transport: Transport, lab: Lab, host: str) -> int:
    """Packets this node marked for the second chance (halab-tproxy's chain)."""
    out = transport.run(host, ["iptables", "-w", "-t", "mangle", "-L", "HALAB-TPROXY", "-n", "-v", "-x"]).stdout
    mark = f"MARK set {lab.packet_path.second_chance_mark:#x}"
    return sum(int(line.split()[0]) for line in out.splitlines() if mark in line)


def _pair(transport: Transport, ctx: VerifyContext, url: str, seconds: int) -> ForwardPair:
    lab = ctx.lab
    master = holders(transport, lab)[0]
    direct = measured_wrk(transport, ctx, url, False, seconds)
    before = {lb.name: _marked(transport, lab, lb.name) for lb in lab.load_balancers}

    def hand_off() -> None:
        time.sleep(HANDOFF_AFTER)
        drills.action(transport, master, "stop", "keepalived")

    mover = threading.Thread(target=hand_off)
    mover.start()
    try:
        forwarded = measured_wrk(transport, ctx, url, False, seconds)
    finally:
        mover.join()
        packets = sum(_marked(transport, lab, name) - n for name, n in before.items())
        drills.action(transport, master, "start", "keepalived")
        settle(transport, ctx.lab, master, ctx.drill_bound)
    return ForwardPair(direct, forwarded, packets, seconds)


def forwarding_cost(transport: Transport, ctx: VerifyContext, seconds: int, pairs: int = FORWARD_PAIRS) -> ForwardCost:
    """wrk through the VIP, keep-alive: `pairs` times, a run held by the holder, then one with a
    planned hand-off HANDOFF_AFTER seconds into it, so that its connections, held by the old
    holder, are forwarded by the new one for the rest of it."""
    lab = ctx.lab
    url = lab.url(next(s for s in lab.services if lab.url(s).startswith("http://")))
    return ForwardCost([_pair(transport, ctx, url, seconds) for _ in range(pairs)])
