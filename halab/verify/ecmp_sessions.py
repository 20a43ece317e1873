"""ecmp mode's established connections through a load balancer's leave and return (issue #24,
docs/ecmp.md). Each leave withdraws the node's route, and the router rehashes every flow; each
return announces it again, and the router rehashes again. A flow the rehash sends to a node
that does not hold its connection is saved by the second chance (halab-tproxy's copies to the
peers). Two drills:

- haproxy killed on one node, then restored: the sessions the other nodes hold are all kept.
  The drill runs a second time with the copies left out, and the row prints both counts: what
  the second chance keeps.
- the planned hand-off on one node (the roll-out's, lb-handoff.sh: the watcher stopped, the VIP
  withdrawn, haproxy serving on), then the watcher started again: every session is kept, the
  node's own included (their packets reach it as copies from the peers).

Who holds each session is read on the load balancers (`ss`), and where the router sends it,
before and after each rehash, on the router (`ip route get` with the session's ports: the
kernel's own L4 hash)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from halab.core.model import Lab, Node
from halab.verify import drills, handoff
from halab.verify.ecmp import hops
from halab.verify.probes import wait_until
from halab.verify.rows import Row, skip
from halab.verify.sessions import Sessions
from halab.verify.transport import Transport, VerifyContext

SESSIONS = 90  # 30 a node on three: enough that every rehash moves some of the others'
# each session asks once a second, an answer slower than 5 s failing it: the hand-off row's pace
INTERVAL, TIMEOUT = handoff.SESSION_INTERVAL, handoff.TIMEOUT
# After a rehash, before the sessions are counted: each has asked twice since, and one whose
# packets were lost has timed out (its failure is counted at that rehash, not the next one).
SETTLE = TIMEOUT + 2 * INTERVAL


@dataclass
class Event:
    """A rehash's counts, of the sessions it must keep (the others', or all of them)."""

    held: int  # those sessions
    moved: int  # of those, how many the router sent to another node
    lost: int  # of those, how many failed or did not end cleanly

    def text(self) -> str:
        return f"{self.held - self.lost}/{self.held} kept ({self.moved} moved by the router)"


@dataclass
class Drill:
    """The leave (a fault, or the hand-off) and the return, or why the drill failed."""

    leave: Event | None = None
    back: Event | None = None
    own: int = 0  # sessions the node that left held before it left
    failed: str = ""

    @property
    def kept(self) -> bool:
        # no session found (ss saw none), or none that a rehash moved (nothing for the second
        # chance to do), proves nothing: not kept
        events = (self.leave, self.back)
        if not all(e is not None and e.held > 0 and e.lost == 0 for e in events):
            return False
        return sum(e.moved for e in events if e is not None) > 0

    def text(self) -> str:
        if self.leave is None or self.back is None:
            return self.failed
        return f"at the leave {self.leave.text()}, at the return {self.back.text()}"


def _owners(transport: Transport, lab: Lab, port: int, client: str) -> dict[int, str]:
    """Each established connection of `client` to the VIP, by client port: its load balancer."""
    found = {}
    for lb in lab.load_balancers:
        cmd = ["ss", "-Htn", "state", "established", "src", f"{lab.vip}:{port}", "dst", client]
        for line in transport.run(lb.name, cmd, check=False).stdout.splitlines():
            peer = line.split()[-1]
            found[int(peer.rsplit(":", 1)[1])] = lb.name
    return found


# Run on the router: the next hop of each client port, by the kernel's route lookup with the
# flow's addresses and ports (the router's custom hash: fib_multipath_hash_policy 3), as a forwarded packet
# from the client's interface would get it.
ROUTES = r"""
import json, re, subprocess, sys
vip, client, port, ports = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
dev = json.loads(subprocess.run(["ip", "-j", "route", "get", client], capture_output=True, text=True).stdout)[0]["dev"]
out = {}
for p in ports:
    got = subprocess.run(["ip", "route", "get", vip, "from", client, "iif", dev, "ipproto", "tcp",
                          "sport", p, "dport", port], capture_output=True, text=True).stdout
    m = re.search(r" via (\S+)", got)
    out[p] = m.group(1) if m else None
print(json.dumps(out))
"""


def _routed(transport: Transport, ctx: VerifyContext, port: int, client: str, ports: list[int]) -> dict[int, str]:
    """Where the router sends each client port's packets now: the load balancer's name."""
    by_address = {str(lb.address): lb.name for lb in ctx.lab.load_balancers}
    args = [transport.python, "-c", ROUTES, str(ctx.lab.vip), client, str(port), *map(str, ports)]
    out = transport.run(ctx.router, args, check=False, timeout=60).stdout
    try:
        routed = {int(p): by_address.get(v or "", "none") for p, v in json.loads(out).items()}
    except ValueError:
        routed = {}
    if len(routed) != len(set(ports)):  # no figure rather than a count of 0 moved
        raise DrillFailed(f"the router did not say where it sends the sessions: {out.strip()[-200:] or 'nothing'}")
    return routed


class DrillFailed(Exception):
    """The drill could not be run as planned (its sessions did not open): the row says why."""


def _open(transport: Transport, ctx: VerifyContext, url: str, tag: str) -> Sessions:
    s = Sessions(transport, ctx.client, url, ctx.client_sources[0], SESSIONS, tag, INTERVAL, TIMEOUT)
    if not s.all_open(30 + SESSIONS * INTERVAL / 10):
        s.kill()
        raise DrillFailed(f"{len(s.opened)}/{SESSIONS} sessions opened, {len(s.failed)} failed")
    time.sleep(INTERVAL)  # each has asked twice
    return s


Step = Callable[[str], object]


def _drill(
    transport: Transport, ctx: VerifyContext, victim: Node, port: int, url: str, tag: str,
    leave: Step, back: Step, keeps_own: bool,
) -> Drill:  # fmt: skip
    """Sessions `a` opened with every node up, then `leave(victim)`; sessions `b` opened while
    it is out (all on the others), then `back(victim)`. The leave counts `a`'s sessions that
    must be kept (the others', and the node's own if `keeps_own`); the return counts `b`'s, and
    `a`'s kept at the leave."""
    lab, client, vip = ctx.lab, ctx.client_sources[0], str(ctx.lab.vip)
    addr = str(victim.address)
    opened: list[Sessions] = []
    out = False

    def tracked(s: Sessions) -> dict[int, int]:
        """The sessions of `s` to keep, each with its client port."""
        owners = _owners(transport, lab, port, client)
        keep = (lambda o: o is not None) if keeps_own else (lambda o: o not in (None, victim.name))
        return {i: p for i, p in s.ports.items() if keep(owners.get(p))}

    def routed(ports: dict[int, int]) -> dict[int, str]:
        return _routed(transport, ctx, port, client, list(ports.values()))

    def lost(s: Sessions, ids) -> int:
        """Those not ended cleanly by their client (failed, or never closed)."""
        return sum(i not in s.closed for i in ids)

    try:
        a = _open(transport, ctx, url, f"{tag}-a")
        opened.append(a)
        a_kept = tracked(a)
        own = sum(o == victim.name for o in _owners(transport, lab, port, client).values())
        before = routed(a_kept)
        out = True
        leave(victim.name)
        if not wait_until(lambda: addr not in hops(transport, ctx.router, vip), ctx.drill_bound, 0.05):
            return Drill(failed=f"{victim.name}'s route never withdrawn")
        time.sleep(SETTLE)
        left = routed(a_kept)
        b = _open(transport, ctx, url, f"{tag}-b")
        opened.append(b)
        b_kept = tracked(b)
        during = routed(b_kept)
        t_back = time.monotonic()
        back(victim.name)
        out = False
        if not wait_until(lambda: addr in hops(transport, ctx.router, vip), ctx.drill_bound + 30, 0.1):
            return Drill(failed=f"{victim.name} never back in the router's paths")
        time.sleep(SETTLE)
        after_b, after_a = routed(b_kept), routed(a_kept)
        for s in opened:
            s.end(TIMEOUT + 10)
    except DrillFailed as e:
        return Drill(failed=str(e))
    finally:
        for s in opened:
            if not s.done:
                s.kill()
        if out:
            back(victim.name)
    lost_a = {i for i in a_kept if i in a.failed and a.failed[i][0] < t_back}
    a_on = {i: p for i, p in a_kept.items() if i not in lost_a}
    return Drill(
        leave=Event(len(a_kept), _moved(before, left, a_kept), len(lost_a)),
        back=Event(
            len(b_kept) + len(a_on),
            _moved(during, after_b, b_kept) + _moved(left, after_a, a_on),
            lost(b, b_kept) + lost(a, a_on),
        ),
        own=own,
    )


def _moved(then: dict[int, str], now: dict[int, str], ports: dict[int, int]) -> int:
    """How many of these sessions' flows the router sends to another node now than then."""
    return sum(then.get(p) != now.get(p) for p in ports.values())


def check_ecmp_sessions(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """haproxy killed on the first load balancer, then restored: the others' sessions are all
    kept with the second chance, and the same drill without it says how many it kept. Then the
    planned hand-off on the second: every session kept."""
    return [killed_row(transport, ctx), handoff_row(transport, ctx)]


def _setting(ctx: VerifyContext) -> tuple[str, str] | None:
    """The drills' service URL and port, or None where they cannot run."""
    lab = ctx.lab
    svc = next((s for s in lab.services if lab.url(s).startswith("http://")), None)
    if ctx.router is None or svc is None or len(lab.load_balancers) < 2:
        return None
    return lab.url(svc), svc.port


NEEDS = "needs a router host, two load balancers and a plain HTTP service"


def killed_row(transport: Transport, ctx: VerifyContext, without: bool = True) -> Row:
    """haproxy killed on the first load balancer, then restored; `without`: again, with the
    copies to the peers left out, for the count they keep."""
    lab = ctx.lab
    killed = lab.load_balancers[0]
    name = f"haproxy killed on {killed.name}, then back: the others' sessions kept (second chance)"
    setting = _setting(ctx)
    if setting is None:
        return skip(name, NEEDS)
    url, port = setting
    tag = f"/tmp/halab-ecmp-sessions-{os.getpid()}"
    kill, restore = drills.catalogue(transport, lab, ctx.drill_bound)["haproxy killed"]
    with_it = _drill(transport, ctx, killed, port, url, f"{tag}-on", kill, restore, False)
    figure = f"with it: {with_it.text()}"
    if without:
        try:
            for lb in lab.load_balancers:
                drills.action(transport, lb.name, "second-chance", "off")
            no = _drill(transport, ctx, killed, port, url, f"{tag}-off", kill, restore, False)
        finally:
            for lb in lab.load_balancers:
                drills.action(transport, lb.name, "second-chance", "on")
        figure += f"; without it: {no.text()}"
    return Row(name, with_it.kept, f"{figure}; {killed.name}'s own {with_it.own} lost with its haproxy")


def handoff_row(transport: Transport, ctx: VerifyContext) -> Row:
    """The planned hand-off on the second load balancer, then its return: every session kept."""
    lab = ctx.lab
    handed = lab.load_balancers[1 % len(lab.load_balancers)]
    name = f"planned hand-off on {handed.name}, then back: every session kept, its own too"
    setting = _setting(ctx)
    if setting is None:
        return skip(name, NEEDS)
    url, port = setting
    leave, back, finished = _hand_off(transport, lab)
    try:
        tag = f"/tmp/halab-ecmp-sessions-{os.getpid()}-handoff"
        planned = _drill(transport, ctx, handed, port, url, tag, leave, back, True)
    finally:
        step = finished()
    step_ok = step is not None and step.returncode == 0
    said = "ended" if step_ok else "did not end" if step is None else f"failed: {step.stderr.strip()[-300:]}"
    return Row(name, planned.kept and step_ok, f"{planned.text()} ({planned.own} its own); the hand-off step {said}")


def _hand_off(transport: Transport, lab: Lab) -> tuple[Step, Step, Callable[[], object]]:
    """The roll-out's hand-off as a leave: its step (HALAB_ON_DELETE=1) runs in the background,
    for it waits until the node's connections end; the return starts the watcher again, which
    announces the VIP. `finished` waits for the step (the sessions have ended by then) and
    returns its result, or None."""
    result: list = []
    runner: list[threading.Thread] = []

    def leave(name: str) -> None:
        th = threading.Thread(target=lambda: result.append(handoff.hand_off(transport, lab, name)), daemon=True)
        th.start()
        runner.append(th)

    def back(name: str) -> None:
        drills.action(transport, name, "start", "halab-haproxy-watch")

    def finished():
        for th in runner:
            th.join(timeout=lab.handoff_within + lab.vrrp.handoff_drain_seconds + 90)
        return result[0] if result else None

    return leave, back, finished
