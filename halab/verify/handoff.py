"""The planned hand-off row: long-lived sessions opened through the master survive keepalived
stopped there (the VIP moves at once, the old master keeps serving what it holds, reached
through the new master's second chance), and sessions opened through the new master survive
the VIP's return; new connections move in one advert interval, none failing; never two holders
(docs/handoff.md). And the operator's planned hand-off of one load balancer (`hand_off`: the
`handoff` verb of scripts/netns-lab and scripts/vm-lab): the very step a roll-out runs before it
deletes a load balancer's guest (lb-handoff.sh, as its delete). keepalived stops there, a peer
takes the VIP at once, and the step waits, bounded by vrrp.handoffDrainSeconds, for the
connections this node holds to end; it names those it gives up on. The node is then free to
go; `up` brings its keepalived back."""

from __future__ import annotations

import os
import subprocess
import time

from halab.core.model import Lab
from halab.core.roles import load_balancer
from halab.verify import drills
from halab.verify.probes import HolderWatch, holders, sample, wait_until
from halab.verify.rows import Row, skip
from halab.verify.sessions import Sessions
from halab.verify.transport import Transport, VerifyContext


class HandoffError(Exception):
    pass


def hand_off(transport: Transport, lab: Lab, name: str) -> subprocess.CompletedProcess[str]:
    """Runs the hand-off step's delete on load balancer `name`; its output is the step's report."""
    lbs = [lb for lb in lab.load_balancers if lb.name == name]
    if not lbs:
        names = ", ".join(lb.name for lb in lab.load_balancers)
        raise HandoffError(f"handoff: {name!r} is not a load balancer of this stack ({names})")
    bundle = load_balancer.handoff_step(lab, lbs[0]).bundle()
    bound = lab.handoff_within + lab.vrrp.handoff_drain_seconds + 60
    return transport.run(name, ["env", "HALAB_ON_DELETE=1", "bash", "-s"], input=bundle, check=False, timeout=bound)


NAME = "planned hand-off keeps connections (keepalived stopped on the master)"
SESSION_INTERVAL = 1.0  # each session asks once a second: an IMAP or SMTP client's pace
# An answer slower than this is a stall (the bound); on emulated guests, where one
# reload of a step takes seconds of CPU, the patience of a request there.
STALL = 1.0
TIMEOUT = 5.0  # an answer slower than this fails its session


def session_count(ctx: VerifyContext) -> int:
    """200 sessions where the drills press at 50 requests/s; fewer on emulated guests, in the
    same proportion to the load they are given."""
    return max(10, round(4 / ctx.request_interval))


def settle(transport: Transport, lab: Lab, master: str, bound: float) -> bool:
    """keepalived running everywhere, the VIP where the stack says: on `master` (preempt), or on
    one node."""

    def settled() -> bool:
        held = holders(transport, lab)
        return held == [master] if lab.vrrp.preempt else len(held) == 1

    for lb in lab.load_balancers:
        drills.action(transport, lb.name, "start", "keepalived", check=False)
    return wait_until(settled, bound, 0.2)


def _move(transport: Transport, lab: Lab, frm: str, to: str | None, bound: float) -> list[str]:
    """The planned hand-off away from `frm`, or (to set) the VIP's return to `to`, waited for up to
    `bound` seconds: the holders seen when it was complete, or the last seen. Not a fresh probe
    after it: on an emulated guest a probe over SSH can miss its answer and say "none"."""
    seen: list[str] = []

    def now_held(want) -> bool:
        seen[:] = holders(transport, lab)
        return want(seen)

    if to is None:
        drills.action(transport, frm, "stop", "keepalived")
        wait_until(lambda: now_held(lambda h: drills.single_other(h, frm)), bound, 0.1)
    elif lab.vrrp.preempt:
        drills.action(transport, to, "start", "keepalived")
        wait_until(lambda: now_held(lambda h: h == [to]), bound, 0.1)
    else:  # nopreempt: the holder hands off in turn
        drills.action(transport, to, "start", "keepalived")
        drills.action(transport, frm, "stop", "keepalived")
        wait_until(lambda: now_held(lambda h: h == [to]), bound, 0.1)
        drills.action(transport, frm, "start", "keepalived")
    return list(seen)


def _not_open(s: Sessions, where: str) -> str:
    whys = sorted({why for _, why, _ in s.failed.values()})
    return f"{len(s.opened)}/{s.count} sessions opened {where}, {len(s.failed)} failed ({', '.join(whys) or '-'})"


def _sockets(transport: Transport, lab: Lab, source: str) -> dict[str, list[str]]:
    """Each load balancer's TCP sockets, in any state, with the client's address. A session lost
    at a move shows here how: its 4-tuple held by a node that should not have it (a stale
    socket on the new holder takes its packets from the second chance), or by no node."""
    found = {}
    for lb in lab.load_balancers:
        out = transport.run(lb.name, ["ss", "-Htan", "state", "all"], check=False).stdout
        found[lb.name] = [" ".join(line.split()) for line in out.splitlines() if f"{source}:" in line]
    return found


def check_planned_handoff(transport: Transport, ctx: VerifyContext) -> list[Row]:
    lab = ctx.lab
    svc = next((s for s in lab.services if lab.url(s).startswith("http://")), None)
    if len(lab.load_balancers) < 2 or svc is None:
        return [skip(NAME, "needs two load balancers and a plain HTTP service")]
    held = holders(transport, lab)
    if len(held) != 1:
        return [Row(NAME, False, f"no single master ({held})")]
    master, url, n = held[0], lab.url(svc), session_count(ctx)
    stall = STALL if ctx.timed else 3 * STALL
    tag = f"/tmp/halab-sessions-{os.getpid()}"
    opened_a = Sessions(transport, ctx.client, url, ctx.client_sources[0], n, f"{tag}-a", SESSION_INTERVAL, TIMEOUT)
    opened_b: Sessions | None = None
    args = ["--interval", str(ctx.request_interval), "--timeout", str(ctx.request_timeout), "--duration", "300"]
    new_conns = None
    watch = HolderWatch(transport, lab, ctx.holder_interval)
    seen: list[tuple[str, dict[str, list[str]]]] = []  # the sockets, before and after each move
    src = ctx.client_sources[0]
    try:
        if not opened_a.all_open(30 + n * SESSION_INTERVAL / 10):
            return [Row(NAME, False, _not_open(opened_a, f"through {master} before the hand-off"))]
        new_conns = sample(transport, ctx.client, url, [ctx.client_sources[0]], *args)
        if not wait_until(lambda: new_conns.recovered_since(0.0), 10):
            return [Row(NAME, False, "no steady traffic through the VIP before the hand-off")]
        seen.append(("before the hand-off", _sockets(transport, lab, src)))
        t0 = time.monotonic()
        away = _move(transport, lab, master, None, ctx.drill_bound)
        # the watch asks in the background: its answer showing the move comes a round later
        wait_until(lambda: watch.moved(t0, master) is not None, 5, 0.05)
        t_away = watch.moved(t0, master)
        time.sleep(2.5 * SESSION_INTERVAL)  # every session asks twice through the new holder
        seen.append(("after the hand-off", _sockets(transport, lab, src)))
        if len(away) != 1 or away[0] == master:
            return [Row(NAME, False, f"keepalived stopped on {master}: VIP on {away or 'none'}")]
        new = away[0]
        # the first sessions end here: the backends then carry one set of sessions at a time
        ended = opened_a.end(TIMEOUT + 10)
        opened_b = Sessions(transport, ctx.client, url, ctx.client_sources[0], n, f"{tag}-b", SESSION_INTERVAL, TIMEOUT)
        if not opened_b.all_open(30 + n * SESSION_INTERVAL / 10):
            return [Row(NAME, False, _not_open(opened_b, f"through {new}"))]
        seen.append(("before the return", _sockets(transport, lab, src)))
        back = _move(transport, lab, new, master, ctx.drill_bound)
        time.sleep(2.5 * SESSION_INTERVAL)
        seen.append(("after the return", _sockets(transport, lab, src)))
        t2 = time.monotonic()
        ended = opened_b.end(TIMEOUT + 10) and ended
        new_conns.settle(t2)
        requests = new_conns.since(t0)
        failed = [s for s in requests if s.start <= t2 and not s.ok]
        split = watch.most(t0, t2)
    finally:
        watch.stop()
        if new_conns is not None:
            new_conns.stop(settle=False)
        for s in (opened_a, opened_b):
            if s is not None and not s.done:
                s.kill()
        settle(transport, lab, master, ctx.drill_bound)
    lost_a, lost_b = opened_a.lost, opened_b.lost
    moved_in = None if t_away is None else t_away - t0
    in_time = moved_in is not None and (not ctx.timed or moved_in <= lab.vrrp.advert_interval)
    ok = (
        ended
        and not lost_a
        and not lost_b
        and max(opened_a.longest, opened_b.longest) <= stall
        and opened_a.foreign + opened_b.foreign == 0
        and not failed
        and in_time
        and back == [master]
        and split is not None
        and split[1] <= 1
    )

    def lost_text(s: Sessions, held_by: str) -> str:
        text = f"{s.count - len(s.lost)}/{s.count} kept (held by {held_by}), longest answer {s.longest:.2f} s"
        if s.lost:
            first = min((s.failed[i] for i in s.lost if i in s.failed), default=None)
            text += " - lost: " + s.why_lost()
            if first is not None:
                text += f", the first {first[0] - t0:.1f} s after the hand-off began (client port {first[2]})"
                held = [
                    f"{when} {node}: {line}"
                    for when, found in seen
                    for node, lines in found.items()
                    for line in lines
                    if f"{src}:{first[2]}" in line.split()
                ]
                text += "; its sockets: " + (" | ".join(held) or "none on any load balancer")
        return text

    return [
        Row(
            NAME,
            ok,
            f"{master} -> {new}: {lost_text(opened_a, master)}; {new} -> {master}: {lost_text(opened_b, new)}"
            f"; stall bound {stall:g} s; new connections on {new} "
            + ("never seen" if moved_in is None else f"{moved_in:.2f} s after the stop")
            + f" (advert {lab.vrrp.advert_interval:g} s), {len(failed)} of {len(requests)} failed"
            + f"; backends saw another address than the client's {opened_a.foreign + opened_b.foreign} times"
            + f"; most holders {split}; VIP back on {', '.join(back) or 'none'}",
        )
    ]
