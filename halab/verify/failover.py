"""The failover rows: each fault of the catalogue drilled on the master (drills.py), its
detection judged against a ceiling derived from the stack's timers; and persistence across a
failover."""

from __future__ import annotations

import re

from halab.core.model import Lab, Service
from halab.verify import drills
from halab.verify.drills import Fault
from halab.verify.probes import holders, sample, wait_until
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext


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


def failover_rows(
    transport: Transport, ctx: VerifyContext, name: str, fault: Fault, restore: Fault, ceiling: float | None = None
) -> list[Row]:
    """A fault's failover and restore rows. One trial on 2 shared cores can be noisy: a
    detection over the ceiling gets more trials, and their median is judged."""
    runs: list[drills.Drill] = []
    while not runs or (ceiling is not None and len(runs) < JUDGED_TRIALS and _median(runs) > ceiling):
        try:
            d = drills.run(transport, ctx, fault, restore)
        except drills.Unanswered as e:  # the drill restored its node on the way out (drills.run)
            d = str(e)
        if isinstance(d, str):
            return [Row(f"failover, {name}", False, d)]
        runs.append(d)
    d = runs[-1]
    # the restore row shows the first trial whose restore failed, if any (else the last): a
    # restore fails no request (the node takes the VIP back only once it serves: the serving
    # track, keepalived.conf), and never two holders
    bad = next((x for x in runs if not (x.back and _no_split(x.split_restore) and x.back_out.failed == 0)), None)
    r = bad or d
    detect = _median(runs)
    rule = "takes the VIP back (preemption)" if ctx.lab.vrrp.preempt else "stays backup (nopreempt)"
    trials = ", ".join(_seconds(x.detect) for x in runs)
    shown = trials if len(runs) == 1 else f"median {_seconds(detect)} of {trials}"
    return [
        Row(
            f"failover, {name} on {d.master}",
            all(x.ok and _no_split(x.split) for x in runs) and (ceiling is None or detect <= ceiling),
            f"VIP moved in {shown}"
            + (f" (ceiling {ceiling:.2f} s, from the timers)" if ceiling is not None else "")
            + f"; {d.out.seconds:.2f} s to the first success, {d.out.failed} failed; "
            f"VIP on {', '.join(d.after_fault) or 'none'}; {_holders_text(d.split)}",
        ),
        Row(
            f"restore, {name}: {d.master} {rule}",
            bad is None,
            (f"trial {runs.index(bad) + 1} of {len(runs)}: " if bad is not None and len(runs) > 1 else "")
            + f"{r.back_out.seconds:.2f} s to the first success, {r.back_out.failed} failed"
            + ("" if r.back else f", not recovered within {ctx.drill_bound:.0f} s")
            + f"; VIP on {', '.join(r.after_restore) or 'none'}; {_holders_text(r.split_restore)}",
        ),
    ]


def _median(runs: list[drills.Drill]) -> float:
    times = sorted(float("inf") if d.detect is None else d.detect for d in runs)
    return times[len(times) // 2]


def _seconds(x: float | None) -> str:
    return "never" if x is None or x == float("inf") else f"{x:.2f} s"


def check_failovers(transport: Transport, ctx: VerifyContext) -> list[Row]:
    rows: list[Row] = []
    for name, (fault, restore) in drills.catalogue(transport, ctx.lab).items():
        if name.startswith("clean stop"):
            continue  # the persistence check does a clean stop already
        rows += failover_rows(transport, ctx, name, fault, restore, detection_ceilings(ctx).get(name))
    return rows


def _each_source_once(transport: Transport, ctx: VerifyContext, svc: Service) -> dict[str, str | None]:
    sources = list(ctx.client_sources)
    got = sample(
        transport, ctx.client, ctx.lab.url(svc), sources, "--count", str(len(sources)), "--interval", "0"
    ).finish()
    return {s.source: s.backend if s.ok else None for s in got}


STUCK = re.compile(r"key=(\S+) .*server_key=(\S+)")


def _stuck(transport: Transport, lb: str, svc: Service) -> dict[str, str]:
    """A load balancer's stick table for the service: client address -> backend name."""
    out = drills.action(transport, lb, "haproxy-api", "show", "table", svc.haproxy_backend).stdout
    return dict(STUCK.findall(out))


def check_persistence_across_failover(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """Stick tables are replicated (HAProxy peers): after a planned stop of the master's
    keepalived moves the VIP, every client address still reaches the backend it had."""
    lab = ctx.lab
    name = "persistence survives failover: each client keeps its backend on the new master"
    sticky = [s for s in lab.services if s.sticky]
    held = holders(transport, lab)
    if not sticky or len(held) != 1:
        if not sticky:
            return [skip(name, "no sticky service")]
        return [Row(name, False, f"no single master ({held})")]
    svc, master = sticky[0], held[0]
    before = _each_source_once(transport, ctx, svc)
    drills.action(transport, master, "stop", "keepalived")
    try:
        moved = wait_until(lambda: drills.single_other(holders(transport, lab), master), 20, 0.2)
        new = holders(transport, lab)
        # before it serves any of them: the new master already knows each client's backend
        # (replicated), where a coincidence of its own balancing could give the same backends
        known = _stuck(transport, new[0], svc) if moved else {}
        wait_until(lambda: all(_each_source_once(transport, ctx, svc).values()), 10, 0.5)
        after = _each_source_once(transport, ctx, svc)
    finally:
        drills.action(transport, master, "start", "keepalived")
        # settled as the next check expects: the master back (preemption), or the VIP where it went
        wait_until(
            lambda: len(holders(transport, lab)) == 1 and (not lab.vrrp.preempt or holders(transport, lab) == [master]),
            20,
            0.2,
        )
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
