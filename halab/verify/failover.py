"""Failover drills: a fault on the master (haproxy killed or hung, keepalived killed, the link
cut, a clean stop), measured from a client and by the VIP's holders all along, then the node
restored, even when the drill is interrupted."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from halab.core.model import Lab, Service
from halab.verify.probes import (
    HolderWatch,
    Sample,
    drill,
    fault_drill,
    holders,
    sample,
    wait_until,
)
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext

LINK_CUT_DELAY = 0.2  # the link goes down this long after the drill call returns (see drill.sh)


@dataclass
class Outage:
    seconds: float  # from t0 to the first success after the last failure (0: no failure)
    failed: int
    recovered: bool


def outage(samples: list[Sample], t0: float, t_end: float) -> Outage:
    window = sorted((s for s in samples if t0 <= s.start <= t_end), key=lambda s: s.start)
    failed = [s for s in window if not s.ok]
    if not failed:
        return Outage(0.0, 0, bool(window))
    after = [s.end for s in window if s.ok and s.start > failed[-1].start]
    return Outage((min(after) - t0) if after else float("inf"), len(failed), bool(after))


# A fault on a node, or its restore. A fault says when it took effect (monotonic time: the node's
# timestamp for a signal, the scheduled moment for a link cut); None: the call's start.
Fault = Callable[[str], float | None]


@dataclass
class Drill:
    """One fault on the master and its restore, as measured from a client."""

    master: str
    ok: bool  # the VIP moved to one other node and requests recovered, within the bound
    out: Outage
    # from the fault to the first answer of another node that it holds the VIP (None: never
    # seen): what the fault's detection and the takeover cost, without the client's noise
    detect: float | None
    after_fault: list[str]  # the VIP's holders once recovered
    split: tuple[int, int] | None  # most holders while faulted: in one sample, sustained
    back: bool  # restored: the VIP where preemption says, requests recovered
    back_out: Outage
    after_restore: list[str]
    split_restore: tuple[int, int] | None
    samples: list[Sample]
    t_fault: float


BOUND = 20.0  # seconds a drill waits for the VIP to move and requests to recover, each way


def run_drill(t: Transport, ctx: VerifyContext, fault: Fault, restore: Fault, bound: float = BOUND) -> Drill | str:
    """Fault on the master, then the master restored; a string says why it could not start.
    The VIP's holders are sampled all along: two at once is split brain."""
    lab = ctx.lab
    held = holders(t, lab)
    if len(held) != 1:
        return f"no single master to fault ({held})"
    master = held[0]
    step = max(0.2, ctx.holder_interval)  # how often the drill's own waits ask the holders
    args = ["--interval", str(ctx.request_interval), "--timeout", str(ctx.request_timeout)]
    # long enough for every wait below, each at its bound: steady traffic (10 s), the move, the
    # holder samples, the watch's own answer, the restore (the sampler is stopped at the end)
    args += ["--duration", str(4 * bound + 15)]
    s = sample(t, ctx.client, lab.url(lab.services[0]), [ctx.client_sources[0]], *args)
    watch = HolderWatch(t, lab, ctx.holder_interval)
    try:
        if not wait_until(lambda: s.recovered_since(0.0), 10):
            return "no steady traffic through the VIP before the fault"
        t0 = time.monotonic()
        restored = False
        try:
            t0 = fault(master) or t0
            moved = wait_until(lambda: _single_other(holders(t, lab), master) and s.recovered_since(t0), bound, step)
            t_recovered = time.monotonic()  # the fault's window ends here: later, the restore may fail requests
            # the faulted window must hold holder samples to rule out split brain: on slow guests
            # (rounds of seconds over SSH) the VIP may move before two rounds end, so the fault
            # is held a little longer for them (bounded; at once where samples are frequent)
            wait_until(lambda: watch.most(t0) is not None, bound, step)
            if moved:  # the watch asks in the background: its answers show the move a round later
                wait_until(lambda: watch.moved(t0, master) is not None, bound, step)
            t1 = time.monotonic()
            new = holders(t, lab)
            split = watch.most(t0, t1)
            t_moved = watch.moved(t0, master)
            restore(master)
            restored = True
        finally:
            if not restored:  # interrupted (Ctrl-C) or failed mid-drill: the node is restored all the same
                restore(master)
        # preemption: the master takes the VIP back; nopreempt: it stays where it went
        expected = [master] if lab.vrrp.preempt else new
        back = wait_until(lambda: holders(t, lab) == expected and s.recovered_since(t1), bound, step)
        t2 = time.monotonic()
        s.settle(t2)  # the requests that failed in either window have reported by now
        out, back_out = outage(s.samples, t0, t_recovered), outage(s.samples, t1, t2)
        split_restore = watch.most(t1)
        return Drill(
            master,
            moved and out.recovered,
            out,
            None if t_moved is None else t_moved - t0,
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
        s.stop(settle=False)  # its windows are read, settled


def _holders_text(split: tuple[int, int] | None) -> str:
    if split is None:
        return "no holder samples in the window: split brain not ruled out"
    one, sustained = split
    return f"most holders at once: {sustained}" + (
        f" ({one} in one sample, during the transition)" if one > sustained else ""
    )


def _no_split(split: tuple[int, int] | None) -> bool:
    return split is not None and split[1] <= 1


def takeover_seconds(lab: Lab) -> float:
    """How long the next master waits after the faulted one gives the VIP up (its priority-0
    advert): the skew time of the highest-priority backup, (256 - priority) / 256 adverts."""
    priorities = sorted(lb.priority or 0 for lb in lab.load_balancers)
    backup = priorities[-2] if len(priorities) > 1 else 0
    return (256 - backup) / 256 * lab.vrrp.advert_interval


# Processing between the timers' events (the watcher's file, inotify, keepalived's advert, the
# address change) on a host whose 2 cores every lab node shares.
SCHEDULING_SLACK = 0.2


def detection_ceilings(ctx: VerifyContext) -> dict[str, float]:
    """The longest each fault may take to move the VIP (fault to another node's answer that it
    holds the VIP), from the stack's timers, plus the slack and two holder sampling periods (an
    answer comes up to a period after the state it shows, and asks are a period apart):
    - haproxy killed: keepalived's FAULT and priority-0 advert, the next master's skew (the
      watcher sees haproxy's exit as it happens: its pidfd, no poll);
    - haproxy hung: the watcher's next check and its misses, each waiting out its timeout;
    - keepalived killed, link cut: no priority-0 advert, so the backup waits the master-down
      interval (3 adverts) and its skew.
    The haproxy rows assume the watcher (vrrp.haproxy_check: watch); untimed sites (emulated
    VMs) get none."""
    if not ctx.timed:
        return {}
    lab, v = ctx.lab, ctx.lab.vrrp
    takeover = takeover_seconds(lab) + SCHEDULING_SLACK + 2 * ctx.holder_interval
    master_down = 3 * v.advert_interval + takeover
    out = {"keepalived killed": master_down, "link cut": master_down}
    if v.haproxy_check == "watch":
        out["haproxy killed"] = takeover
        out["haproxy hung"] = v.watch_period + v.watch_fall * v.watch_timeout + takeover
    return out


JUDGED_TRIALS = 3  # a detection over its ceiling is judged by the median of this many trials


def failover_drill(
    t: Transport, ctx: VerifyContext, name: str, fault: Fault, restore: Fault, ceiling: float | None = None
) -> list[Row]:
    """A fault's failover and restore rows. One trial on 2 shared cores can be noisy: a
    detection over the ceiling gets more trials, and their median is judged."""
    drills: list[Drill] = []
    while not drills or (ceiling is not None and len(drills) < JUDGED_TRIALS and _median(drills) > ceiling):
        d = run_drill(t, ctx, fault, restore)
        if isinstance(d, str):
            return [Row(f"failover, {name}", False, d)]
        drills.append(d)
    d = drills[-1]
    # the restore row shows the first trial whose restore failed, if any (else the last)
    bad = next((x for x in drills if not (x.back and _no_split(x.split_restore))), None)
    r = bad or d
    detect = _median(drills)
    rule = "takes the VIP back (preemption)" if ctx.lab.vrrp.preempt else "stays backup (nopreempt)"
    trials = ", ".join(_seconds(x.detect) for x in drills)
    shown = trials if len(drills) == 1 else f"median {_seconds(detect)} of {trials}"
    return [
        Row(
            f"failover, {name} on {d.master}",
            all(x.ok and _no_split(x.split) for x in drills) and (ceiling is None or detect <= ceiling),
            f"VIP moved in {shown}"
            + (f" (ceiling {ceiling:.2f} s, from the timers)" if ceiling is not None else "")
            + f"; {d.out.seconds:.2f} s to the first success, {d.out.failed} failed; "
            f"VIP on {', '.join(d.after_fault) or 'none'}; {_holders_text(d.split)}",
        ),
        Row(
            f"restore, {name}: {d.master} {rule}",
            bad is None,
            (f"trial {drills.index(bad) + 1} of {len(drills)}: " if bad is not None and len(drills) > 1 else "")
            + f"{r.back_out.seconds:.2f} s to the first success, {r.back_out.failed} failed"
            + ("" if r.back else f", not recovered within {BOUND:.0f} s")
            + f"; VIP on {', '.join(r.after_restore) or 'none'}; {_holders_text(r.split_restore)}",
        ),
    ]


def _median(drills: list[Drill]) -> float:
    times = sorted(float("inf") if d.detect is None else d.detect for d in drills)
    return times[len(times) // 2]


def _seconds(x: float | None) -> str:
    return "never" if x is None or x == float("inf") else f"{x:.2f} s"


def faults(t: Transport, lab: Lab, bound: float = 20.0) -> dict[str, tuple[Fault, Fault]]:
    """The drills' faults on a node, each with what restores it."""
    iface, gw = lab.network.interface, str(lab.network.gateway)

    def action(*args: str) -> Fault:
        def run(host: str) -> None:
            drill(t, host, *args)

        return run

    def fault(*args: str) -> Fault:
        def run(host: str) -> float:
            return fault_drill(t, host, *args)

        return run

    def cut(host: str) -> float:
        # The node may be reachable through this link only (a VM over SSH): the cut comes just
        # after the call returns, and the node restores the link itself after `bound` + 5 s.
        return fault_drill(t, host, "link-down", iface, str(LINK_CUT_DELAY), str(bound + 5), gw) + LINK_CUT_DELAY

    def uncut(host: str) -> None:
        drill(t, host, "link-up", iface, gw, timeout=bound + 60)  # over SSH: once the link is back

    return {
        "haproxy killed": (fault("kill", "haproxy"), action("start", "haproxy")),
        # every haproxy process stopped, its sockets open: alive and listening, answering nothing
        "haproxy hung": (fault("hang", "haproxy"), action("resume", "haproxy")),
        "keepalived killed": (fault("kill", "keepalived"), action("start", "keepalived")),
        "link cut": (cut, uncut),
        "clean stop (maintenance)": (fault("stop", "keepalived"), action("start", "keepalived")),
    }


def _single_other(held: list[str], master: str) -> bool:
    return len(held) == 1 and held[0] != master


def check_failovers(t: Transport, ctx: VerifyContext) -> list[Row]:
    rows: list[Row] = []
    for name, (fault, restore) in faults(t, ctx.lab).items():
        if name.startswith("clean stop"):
            continue  # the persistence check does a clean stop already
        rows += failover_drill(t, ctx, name, fault, restore, detection_ceilings(ctx).get(name))
    return rows


def _each_source_once(t: Transport, ctx: VerifyContext, svc: Service) -> dict[str, str | None]:
    sources = list(ctx.client_sources)
    got = sample(t, ctx.client, ctx.lab.url(svc), sources, "--count", str(len(sources)), "--interval", "0").finish()
    return {s.source: s.backend if s.ok else None for s in got}


STUCK = re.compile(r"key=(\S+) .*server_key=(\S+)")


def _stuck(t: Transport, lb: str, svc: Service) -> dict[str, str]:
    """A load balancer's stick table for the service: client address -> backend name."""
    out = drill(t, lb, "haproxy-api", "show", "table", svc.haproxy_backend).stdout
    return dict(STUCK.findall(out))


def check_persistence_across_failover(t: Transport, ctx: VerifyContext) -> list[Row]:
    """Stick tables are replicated (HAProxy peers): after a planned stop of the master's
    keepalived moves the VIP, every client address still reaches the backend it had."""
    lab = ctx.lab
    name = "persistence survives failover: each client keeps its backend on the new master"
    sticky = [s for s in lab.services if s.sticky]
    held = holders(t, lab)
    if not sticky or len(held) != 1:
        if not sticky:
            return [skip(name, "no sticky service")]
        return [Row(name, False, f"no single master ({held})")]
    svc, master = sticky[0], held[0]
    before = _each_source_once(t, ctx, svc)
    drill(t, master, "stop", "keepalived")
    try:
        moved = wait_until(lambda: _single_other(holders(t, lab), master), 20, 0.2)
        new = holders(t, lab)
        # before it serves any of them: the new master already knows each client's backend
        # (replicated), where a coincidence of its own balancing could give the same backends
        known = _stuck(t, new[0], svc) if moved else {}
        wait_until(lambda: all(_each_source_once(t, ctx, svc).values()), 10, 0.5)
        after = _each_source_once(t, ctx, svc)
    finally:
        drill(t, master, "start", "keepalived")
        # settled as the next check expects: the master back (preemption), or the VIP where it went
        wait_until(lambda: len(holders(t, lab)) == 1 and (not lab.vrrp.preempt or holders(t, lab) == [master]), 20, 0.2)
    kept = sum(1 for src, b in before.items() if b and after.get(src) == b)
    replicated = sum(1 for src, b in before.items() if b and known.get(src) == b)
    return [
        Row(
            name,
            moved and kept == len(before) and replicated == len(before),
            f"{kept}/{len(before)} client addresses kept their backend, {replicated}/{len(before)} known to the "
            "new master before it served them; "
            f"VIP moved {master} -> {', '.join(new) or 'none'} (keepalived stopped cleanly)",
        )
    ]
