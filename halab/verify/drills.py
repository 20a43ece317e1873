"""A drill: one fault on the master (haproxy killed or hung, keepalived killed, the link cut, a
clean stop) and its restore, measured from a client and by the VIP's holders all along, the
node restored even when the drill is interrupted. The faults' catalogue, and the actions of
halab/node/steps/drill.sh they are made of (shipped to the node as a bundle like any step).
The failover rows (failover.py) and the benchmark run them."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from halab.core.model import Lab
from halab.core.step import Step
from halab.verify.probes import HolderWatch, Sample, holders, sample, wait_until
from halab.verify.transport import Transport, VerifyContext


class Unanswered(RuntimeError):
    """A drill action that did not end in time: the host, the action, and what it printed."""


def action(transport: Transport, host: str, *args: str, check: bool = True, timeout: float = 60.0):
    """A drill action (halab/node/steps/drill.sh) on one host, from a bundle like any step."""
    bundle = Step(host, "drill", "drill.sh", args).bundle()
    try:
        return transport.run(host, ["bash", "-s"], input=bundle, check=check, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        printed = "".join(_text(x) for x in (e.stdout, e.stderr)).strip()[-600:]
        raise Unanswered(
            f"{host}: drill.sh {' '.join(args)} did not end within {timeout:.0f} s"
            + (f"; it printed: {printed}" if printed else "; it printed nothing")
        ) from e


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


# drill.sh's "fault at EPOCH": the node's wall clock just before it sent the fault's signal
# (bash's $EPOCHREALTIME, whose separator follows the locale)
FAULT_AT = re.compile(r"fault at (\d+)[.,](\d+)$", re.M)


def fault(transport: Transport, host: str, *args: str) -> float:
    """A fault drill (kill, stop, hang) on one host; returns when the fault took effect, on this
    process's monotonic clock: the node's own timestamp mapped through the wall clock, kept
    within the call (a VM's clock may run apart from this host's). Without it, the fault's
    clock would start when it was asked for, before the drill's bundle even reached the node."""
    start, wall = time.monotonic(), time.time()
    out = action(transport, host, *args).stdout
    end = time.monotonic()
    m = FAULT_AT.search(out)
    if not m:
        return start
    return min(max(start + float(f"{m[1]}.{m[2]}") - wall, start), end)


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


def run(transport: Transport, ctx: VerifyContext, faulting: Fault, restore: Fault) -> Drill | str:
    """Fault on the master, then the master restored; a string says why it could not start.
    The VIP's holders are sampled all along: two at once is split brain. Each way waits up to
    ctx.drill_bound."""
    bound = ctx.drill_bound
    lab = ctx.lab
    held = holders(transport, lab)
    if len(held) != 1:
        return f"no single master to fault ({held})"
    master = held[0]
    step = max(0.2, ctx.holder_interval)  # how often the drill's own waits ask the holders
    args = ["--interval", str(ctx.request_interval), "--timeout", str(ctx.request_timeout)]
    # long enough for every wait below, each at its bound: steady traffic (10 s), the move, the
    # holder samples, the watch's own answer, the restore (the sampler is stopped at the end)
    args += ["--duration", str(4 * bound + 15)]
    s = sample(transport, ctx.client, lab.url(lab.services[0]), [ctx.client_sources[0]], *args)
    watch = HolderWatch(transport, lab, ctx.holder_interval)
    try:
        if not wait_until(lambda: s.recovered_since(0.0), 10):
            return "no steady traffic through the VIP before the fault"
        t0 = time.monotonic()
        restored = False
        try:
            t0 = faulting(master) or t0
            moved = wait_until(
                lambda: single_other(holders(transport, lab), master) and s.recovered_since(t0), bound, step
            )
            t_recovered = time.monotonic()  # the fault's window ends here: later, the restore may fail requests
            # the faulted window must hold holder samples to rule out split brain: on slow guests
            # (rounds of seconds over SSH) the VIP may move before two rounds end, so the fault
            # is held a little longer for them (bounded; at once where samples are frequent)
            wait_until(lambda: watch.most(t0) is not None, bound, step)
            if moved:  # the watch asks in the background: its answers show the move a round later
                wait_until(lambda: watch.moved(t0, master) is not None, bound, step)
            t1 = time.monotonic()
            new = holders(transport, lab)
            split = watch.most(t0, t1)
            t_moved = watch.moved(t0, master)
            restore(master)
            restored = True
        finally:
            if not restored:  # interrupted (Ctrl-C) or failed mid-drill: the node is restored all the same
                restore(master)
        # preemption: the master takes the VIP back; nopreempt: it stays where it went
        expected = [master] if lab.vrrp.preempt else new
        back = wait_until(lambda: holders(transport, lab) == expected and s.recovered_since(t1), bound, step)
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
            holders(transport, lab),
            split_restore,
            list(s.samples),
            t0,
        )
    finally:
        watch.stop()
        s.stop(settle=False)  # its windows are read, settled


def outage_hold(lab: Lab) -> float:
    """How long a link cut lasts at least: long enough for the cut node's health checks to take
    every server out (`fall` checks, `interval` apart, the last waiting out its timeout), and a
    second. A restore then meets what any outage longer than a few seconds leaves: a node whose
    haproxy has no server UP until its checks rise again, which must not take the VIP back
    before it serves (the serving track, keepalived.conf). A cut shorter than the checks
    proved nothing of it: on the namespace lab the VIP moved in 3 s and came back to servers
    still UP."""
    hc = lab.health_check
    return 0.0 if hc is None else hc.fall * hc.interval_seconds + hc.timeout_seconds + 1.0


def catalogue(transport: Transport, lab: Lab, bound: float = 20.0) -> dict[str, tuple[Fault, Fault]]:
    """The drills' faults on a node, each with what restores it."""
    iface, gw = lab.network.interface, str(lab.network.gateway)

    def restoring(*args: str) -> Fault:
        def restore(host: str) -> None:
            action(transport, host, *args)

        return restore

    def faulting(*args: str) -> Fault:
        def take_effect(host: str) -> float:
            return fault(transport, host, *args)

        return take_effect

    hold = outage_hold(lab)
    cut_at: list[float] = []

    def cut(host: str) -> float:
        # The node may be reachable through this link only (a VM over SSH): the cut comes just
        # after the call returns, and the node restores the link itself after `bound` + 5 s.
        at = fault(transport, host, "link-down", iface, str(LINK_CUT_DELAY), str(bound + 5), gw) + LINK_CUT_DELAY
        cut_at[:] = [at]
        return at

    def uncut(host: str) -> None:
        if cut_at:  # as long as a real outage: the node's checks have taken its servers out
            time.sleep(max(0.0, min(cut_at[0] + hold - time.monotonic(), bound)))
        action(transport, host, "link-up", iface, gw, timeout=bound + 60)  # over SSH: once the link is back

    return {
        "haproxy killed": (faulting("kill", "haproxy"), restoring("start", "haproxy")),
        # every haproxy process stopped, its sockets open: alive and listening, answering nothing
        "haproxy hung": (faulting("hang", "haproxy"), restoring("resume", "haproxy")),
        "keepalived killed": (faulting("kill", "keepalived"), restoring("start", "keepalived")),
        "link cut": (cut, uncut),
        "clean stop (maintenance)": (faulting("stop", "keepalived"), restoring("start", "keepalived")),
    }


def single_other(held: list[str], master: str) -> bool:
    return len(held) == 1 and held[0] != master
