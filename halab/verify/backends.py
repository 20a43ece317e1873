"""Rows about the backend servers as haproxy sees them: every server passes its health check,
and a backend stopped or hung leaves the rotation and comes back."""

from __future__ import annotations

import csv
import io
import time

from halab.core.model import Lab, Service
from halab.verify import drills
from halab.verify.probes import (
    sample,
    wait_until,
)
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext


def haproxy_stat(transport: Transport, lb: str) -> list[list[str]]:
    """lb's `show stat` (runtime API), one CSV row per proxy or server: pxname, svname, ...,
    stot at 7, status at 17."""
    stat = drills.action(transport, lb, "haproxy-api", "show", "stat", check=False).stdout
    return [r for r in csv.reader(io.StringIO(stat.lstrip("# "))) if len(r) > 17 and r[1] != "svname"]


def _server_status(transport: Transport, lb: str) -> dict[tuple[str, str], str]:
    """(haproxy backend, server) -> health status (UP, DOWN, ...), from lb's runtime API."""
    return {(r[0], r[1]): r[17] for r in haproxy_stat(transport, lb) if r[1] not in ("FRONTEND", "BACKEND")}


def servers_not_up(transport: Transport, lab: Lab, lb: str) -> list[str]:
    """The pools' servers that lb's haproxy does not call UP, with what it calls them."""
    want = {(svc.haproxy_backend, b.name) for svc in lab.services for b in lab.pool(svc)}
    status = _server_status(transport, lb)
    return sorted(f"{bk}/{srv} {status.get((bk, srv), 'absent')}" for bk, srv in want
                  if not status.get((bk, srv), "").startswith("UP"))  # fmt: skip


def check_backends_up(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """Every server of every service's pool is UP on every load balancer (its check passes)."""
    lab = ctx.lab
    total = sum(len(lab.pool(svc)) for svc in lab.services)
    rows = []
    for lb in lab.load_balancers:
        down = servers_not_up(transport, lab, lb.name)
        fig = f"{total - len(down)}/{total} UP" + (f"; not UP: {', '.join(down)}" if down else "")
        rows.append(Row(f"every backend server passes its health check on {lb.name}", not down, fig))
    return rows


# How a backend fails in the drills, and what undoes it (halab/node/steps/drill.sh). Stopped: the
# kernel refuses its port. Hung: the kernel still accepts connections for it, it answers nothing;
# only a check that asks the service itself (httpchk, a banner) sees it.
BACKEND_FAULTS = {"stopped": ("stop", "start"), "hung": ("hang", "resume")}
BACKEND_RESTORED = {"stopped": "started", "hung": "resumed"}


def check_backend_health(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """A backend's web server stopped, then hung: each time it leaves the rotation once health
    checks see it, with no failed request after that, and comes back when restored. Then its
    TCP banner hung, where TCP services have checks that ask it (banner_hang)."""
    lab = ctx.lab
    web = [svc for svc in lab.services if svc.protocol == "http"]
    if not web:
        rows = [skip("a failed backend leaves the rotation", "no HTTP service (the drill stops Apache)")]
    else:
        rows = [row for how in BACKEND_FAULTS for row in backend_fault(transport, ctx, web[0], how)]
    return rows + banner_hang(transport, ctx)


def detection_bound(lab: Lab) -> float:
    """How long health checks may take to mark a server down (or up): each check may wait out
    its timeout before it counts as failed (a hung server)."""
    interval = lab.health_check.interval_seconds + lab.health_check.timeout_seconds
    return (max(lab.health_check.fall, lab.health_check.rise) + 2) * interval + 5


def backend_fault(transport: Transport, ctx: VerifyContext, svc: Service, how: str) -> list[Row]:
    lab = ctx.lab
    victim = lab.pool(svc)[0]
    lbs = [lb.name for lb in lab.load_balancers]
    fault, restore = BACKEND_FAULTS[how]

    def status(lb: str) -> str:
        return _server_status(transport, lb).get((svc.haproxy_backend, victim.name), "absent")

    bound = detection_bound(lab)
    args = ["--interval", "0.05", "--timeout", "1", "--duration", str(2 * bound + 15)]
    s = sample(transport, ctx.client, lab.url(svc), list(ctx.client_sources), *args)
    try:
        wait_until(lambda: s.recovered_since(0.0), 10)
        # From a server in rotation: one already out (a reload's newcomer, not yet checked) would
        # make any detection look instant and prove nothing.
        ready = wait_until(lambda: all(status(lb).startswith("UP") for lb in lbs), bound, 0.2)
        t0 = time.monotonic()
        drills.action(transport, victim.name, fault, "apache2")
        try:
            down = wait_until(lambda: all(status(lb).startswith("DOWN") for lb in lbs), bound, 0.2)
            t_detect = time.monotonic()
            time.sleep(3)
            t_end = time.monotonic()
        finally:  # restored whatever happens, Ctrl-C included
            t1 = time.monotonic()
            drills.action(transport, victim.name, restore, "apache2")
        s.settle(t_end)
        before = sum(1 for x in s.since(t0) if not x.ok and x.start < t_detect)
        after = [x for x in s.since(t_detect) if x.start < t_end]
        failed_after = sum(1 for x in after if not x.ok)
        clients = len({x.source for x in after})
        rows = [
            Row(
                f"{victim.name} {how}: out of rotation on every load balancer, no failure after detection",
                ready and down and failed_after == 0 and bool(after),
                ("" if ready else "not UP on every load balancer before the fault; ")
                + (f"detected in {t_detect - t0:.1f} s" if down else f"still in rotation after {t_detect - t0:.1f} s")
                + f"; {failed_after} failed of {len(after)} after (from {clients} client addresses), {before} before",
            )
        ]
        up = wait_until(lambda: all(status(lb).startswith("UP") for lb in lbs), bound, 0.2)
        rows.append(
            Row(
                f"{victim.name} {BACKEND_RESTORED[how]}: back in rotation",
                up,
                f"UP on every load balancer after {time.monotonic() - t1:.1f} s",
            )
        )
        return rows
    finally:
        s.stop(settle=False)  # its windows are read, settled


def banner_hung_services(lab: Lab) -> tuple[str, list[Service]]:
    """The TCP banner drill's victim (the first backend of the first TCP service whose check asks
    the banner) and every TCP service of that backend whose check asks it (banner, smtp); a
    connect check cannot see a hang, and no row claims it does."""
    asked = [s for s in lab.services if s.protocol == "tcp" and s.check.kind in ("banner", "smtp")]
    if not asked:
        return "", []
    victim = lab.pool(asked[0])[0]
    return victim.name, [s for s in asked if victim in lab.pool(s)]


def banner_hang(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """The victim's TCP banner hung (SIGSTOP: the kernel still accepts connections for it): every
    TCP service whose check asks the banner leaves the rotation on every load balancer, and
    comes back once it is resumed. What proves the smtp and banner checks ask the service."""
    lab = ctx.lab
    victim, services = banner_hung_services(lab)
    if not services:
        return []
    lbs = [lb.name for lb in lab.load_balancers]
    wanted = [(lb, s.haproxy_backend) for lb in lbs for s in services]
    seen: dict[tuple[str, str], str] = {}

    def all_in(state: str) -> bool:
        by_lb = {lb: _server_status(transport, lb) for lb in lbs}
        seen.update({(lb, bk): by_lb[lb].get((bk, victim), "absent") for lb, bk in wanted})
        return all(seen[w].startswith(state) for w in wanted)

    bound = detection_bound(lab)
    names = ", ".join(s.name for s in services)
    ready = wait_until(lambda: all_in("UP"), bound, 0.2)  # from in rotation, as backend_fault
    t0 = time.monotonic()
    drills.action(transport, victim, "hang", "halab-banner")
    try:
        down = wait_until(lambda: all_in("DOWN"), bound, 0.2)
        waited = time.monotonic() - t0
    finally:  # resumed whatever happens, Ctrl-C included
        t1 = time.monotonic()
        drills.action(transport, victim, "resume", "halab-banner")
    still = sorted(f"{bk.removeprefix('bk_')} on {lb}" for (lb, bk), st in seen.items() if not st.startswith("DOWN"))
    found = f"detected in {waited:.1f} s" if down else f"still in rotation after {waited:.1f} s: {', '.join(still)}"
    rows = [
        Row(
            f"{victim} banner hung: out of rotation for {names} on every load balancer",
            ready and down,
            ("" if ready else "not UP on every load balancer before the hang; ") + found,
        )
    ]
    up = wait_until(lambda: all_in("UP"), bound, 0.2)
    back = f"UP on every load balancer after {time.monotonic() - t1:.1f} s"
    rows.append(Row(f"{victim} banner resumed: back in rotation", up, back))
    return rows
