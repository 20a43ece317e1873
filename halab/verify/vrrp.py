"""Rows about VRRP itself: one holder and adverts flowing, a rogue's adverts dropped before
keepalived, every state change logged."""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path

from halab.core import plan
from halab.core.model import Lab
from halab.node.paths import PATHS
from halab.verify import drills
from halab.verify.probes import (
    holders,
)
from halab.verify.rows import Row
from halab.verify.transport import Transport, VerifyContext

ROGUE = (Path(__file__).parent / "rogue.py").read_text()


def _adverts(transport: Transport, host: str) -> tuple[int, int]:
    text = drills.action(transport, host, "vrrp-stats").stdout
    m = re.search(r"Advertisements:\s*Received:\s*(\d+)\s*Sent:\s*(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def expected_master(transport: Transport, lab: Lab) -> tuple[str | None, str]:
    """Which load balancer must hold the VIP now, and why. The preferred one (highest priority)
    from the start, and always with preemption; with `nopreempt`, once another node has become
    master after it (a failover), the VIP stays wherever it went (None: any single holder). A
    node that became master before the preferred one ever did is the start-order bug this
    catches: the drivers start keepalived on the preferred node first (plan.keepalived_order)."""
    preferred = plan.keepalived_order(lab)[0]
    why = f"the preferred master, priority {preferred.priority}"
    if lab.vrrp.preempt:
        return preferred.name, why
    first_master: dict[str, str] = {}  # node -> when it first became master (ISO time)
    for lb in lab.load_balancers:
        for m in map(TRANSITION.match, transition_log(transport, lb.name)):
            if m and m.group(3) == "MASTER":
                first_master.setdefault(lb.name, m.group(0).split(" ", 1)[0])
    mine = first_master.get(preferred.name)
    if mine is not None and any(n != preferred.name and when > mine for n, when in first_master.items()):
        return None, f"nopreempt: {preferred.name} was master, then a failover moved the VIP"
    return preferred.name, why


def check_vip(transport: Transport, ctx: VerifyContext) -> list[Row]:
    lab = ctx.lab
    held = holders(transport, lab)
    expected, why = expected_master(transport, lab)
    ok = len(held) == 1 and expected in (None, held[0])
    fig = f"{', '.join(held) or 'none'} holds {lab.vip}; expected: {expected or 'any one'} ({why})"
    rows = [Row("exactly one load balancer holds the VIP, the one expected", ok, fig)]
    before = {lb.name: _adverts(transport, lb.name) for lb in lab.load_balancers}
    time.sleep(3 * lab.vrrp.advert_interval + 0.5)
    after = {lb.name: _adverts(transport, lb.name) for lb in lab.load_balancers}
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


def _vrrp_counters(transport: Transport, host: str) -> tuple[int, int]:
    """(VRRP packets dropped by the HALAB-VRRP filter, bad adverts keepalived saw)."""
    rules = transport.run(host, ["iptables", "-w", "-L", "HALAB-VRRP", "-v", "-x", "-n"], check=False).stdout
    dropped = sum(int(line.split()[0]) for line in rules.splitlines() if " DROP " in f" {line} ")
    stats = drills.action(transport, host, "vrrp-stats").stdout
    bad = sum(int(n) for n in re.findall(r"(?:Address List|Failure|Type Mismatch|Invalid Type): (\d+)", stats))
    return dropped, bad


def check_vrrp_filter(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """A rogue on the lab subnet (a backend: on the segment, not a peer) sends VRRP adverts for
    the VIP's router id at priority 254 (rogue.py): the load balancers drop them before
    keepalived sees them, and no load balancer changes state meanwhile. The master staying is
    read from the VRRP logs over the window, not from one probe of the holders at its end: a
    probe over SSH that a starved guest does not answer in time reads as "not holding" (a
    VM-lab verify failed this row so, lb1's log showing no change)."""
    lab, v = ctx.lab, ctx.lab.vrrp
    used = {lab.vip, lab.network.gateway, *(n.address for n in lab.nodes), *lab.test_clients}
    # another address than the VIP: had the filter failed, the rogue still takes no traffic
    decoy = next(a for a in reversed(list(lab.network.cidr.hosts())) if a not in used)
    rogue = lab.node(ctx.rogue)
    to = [str(lb.address) for lb in lab.load_balancers] if v.unicast else ["224.0.0.18"]
    seconds = max(3.0, 5 * v.advert_interval)
    logged = state_changes(transport, lab)
    before = {lb.name: _vrrp_counters(transport, lb.name) for lb in lab.load_balancers}
    args = ["--version", str(v.version), "--vrid", str(v.router_id), "--priority", "254"]
    args += ["--interval", str(v.advert_interval), "--source", str(rogue.address), "--address", str(decoy)]
    args += [a for dst in to for a in ("--to", dst)] + ["--seconds", str(seconds)]
    sent = transport.run(ctx.rogue, [transport.python, "-", *args], input=ROGUE, check=False, timeout=seconds + 10)
    after = {lb.name: _vrrp_counters(transport, lb.name) for lb in lab.load_balancers}
    dropped = {n: after[n][0] - before[n][0] for n in before}
    seen = {n: after[n][1] - before[n][1] for n in before}
    changed = {n: states for n, states in states_since(transport, lab, logged).items() if states}
    ok = all(d > 0 for d in dropped.values()) and not any(seen.values()) and not changed
    fig = f"{ctx.rogue}: {sent.stdout.strip() or sent.stderr.strip()[-200:]}; "
    fig += ", ".join(f"{n}: {dropped[n]} dropped, {seen[n]} reached keepalived" for n in before)
    fig += f"; VRRP states logged meanwhile: {changed or 'none'}; VIP on {', '.join(holders(transport, lab)) or 'none'}"
    return [Row("VRRP from a non-peer (priority 254) is dropped before keepalived; the master stays", ok, fig)]


TRANSITION = re.compile(
    r"^\d{4}-\d\d-\d\dT[\d:,.]+[+-]\d\d:\d\d (\S+) INSTANCE (\S+) (MASTER|BACKUP|FAULT|STOP) priority=\d+$"
)


def transition_log(transport: Transport, host: str) -> list[str]:
    """The VRRP state changes a load balancer has logged (halab-notify), one line each."""
    return transport.run(host, ["cat", PATHS["VRRP_LOG"]], check=False).stdout.splitlines()


def master_times(transport: Transport, host: str) -> list[float]:
    """When a load balancer became MASTER, each time, from its log (Unix time): halab-notify
    stamps its lines with date's ISO 8601 to the nanosecond, a comma before the fraction."""
    out = []
    for m in map(TRANSITION.match, transition_log(transport, host)):
        if m and m.group(3) == "MASTER":
            whole, _, rest = m.group(0).split(" ", 1)[0].partition(",")
            stamp = datetime.datetime.fromisoformat(whole + rest[9:])
            out.append(stamp.timestamp() + float(f"0.{rest[:9]}"))
    return out


def state_changes(transport: Transport, lab: Lab) -> dict[str, int]:
    """How many VRRP state changes each load balancer has logged so far: the difference over a
    window says whether the VIP moved in it."""
    return {lb.name: len(transition_log(transport, lb.name)) for lb in lab.load_balancers}


def states_since(transport: Transport, lab: Lab, counts: dict[str, int]) -> dict[str, list[str]]:
    """The VRRP states each load balancer logged after its first `counts` lines (what
    `state_changes` returned at a window's start), in order: what the window did to each."""
    return {
        name: [m.group(3) for m in map(TRANSITION.match, transition_log(transport, name)[n:]) if m]
        for name, n in counts.items()
    }


def check_transition_log(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """Every load balancer logged its VRRP state changes (the drills made some), timestamped."""
    counts, ok = {}, True
    for lb in ctx.lab.load_balancers:
        lines = transition_log(transport, lb.name)
        good = [m for m in map(TRANSITION.match, lines) if m and m.group(1) == lb.name]
        counts[lb.name] = (len(good), good[-1].group(3) if good else "-")
        ok = ok and bool(good) and len(good) == len(lines)
    fig = ", ".join(f"{n}: {c} changes (now {last})" for n, (c, last) in counts.items())
    return [Row("every VRRP state change is logged, timestamped, on each load balancer", ok, fig)]
