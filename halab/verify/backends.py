"""Rows about the backend servers as haproxy sees them: every server passes its health check,
and a backend stopped or hung leaves the rotation and comes back."""

from __future__ import annotations

import csv
import io
import time

from halab import render
from halab.model import Service
from halab.verify.probes import (
    drill,
    sample,
    wait_until,
)
from halab.verify.rows import Row, skip
from halab.verify.transport import Site, Transport


def _server_status(t: Transport, lb: str) -> dict[tuple[str, str], str]:
    """(haproxy backend, server) -> health status (UP, DOWN, ...), from lb's runtime API."""
    stat = drill(t, lb, "haproxy-api", "show", "stat", check=False).stdout
    rows = csv.reader(io.StringIO(stat.lstrip("# ")))
    return {(r[0], r[1]): r[17] for r in rows if len(r) > 17 and r[1] not in ("FRONTEND", "BACKEND", "svname")}


def check_backends_up(t: Transport, site: Site) -> list[Row]:
    """Every server of every service's pool is UP on every load balancer (its check passes)."""
    lab = site.lab
    want = {(f"bk_{svc.name}", b.name) for svc in lab.services for b in lab.pool(svc)}
    rows = []
    for lb in lab.load_balancers:
        status = _server_status(t, lb.name)
        down = sorted(f"{bk}/{srv} {status.get((bk, srv), 'absent')}" for bk, srv in want
                      if not status.get((bk, srv), "").startswith("UP"))  # fmt: skip
        fig = f"{len(want) - len(down)}/{len(want)} UP" + (f"; not UP: {', '.join(down)}" if down else "")
        rows.append(Row(f"every backend server passes its health check on {lb.name}", not down, fig))
    return rows


# How a backend fails in the drills, and what undoes it (scripts/steps/drill.sh). Stopped: the
# kernel refuses its port. Hung: the kernel still accepts connections for it, it answers nothing;
# only a check that asks the service itself (httpchk, a banner) sees it.
BACKEND_FAULTS = {"stopped": ("stop", "start"), "hung": ("hang", "resume")}
BACKEND_RESTORED = {"stopped": "started", "hung": "resumed"}


def check_backend_health(t: Transport, site: Site) -> list[Row]:
    """A backend's web server stopped, then hung: each time it leaves the rotation once health
    checks see it, with no failed request after that, and comes back when restored."""
    lab = site.lab
    web = [svc for svc in lab.services if svc.protocol == "http"]
    if not web:
        return [skip("a failed backend leaves the rotation", "no HTTP service (the drill stops Apache)")]
    return [row for how in BACKEND_FAULTS for row in backend_fault(t, site, web[0], how)]


def backend_fault(t: Transport, site: Site, svc: Service, how: str) -> list[Row]:
    lab = site.lab
    victim = lab.pool(svc)[0]
    lbs = [lb.name for lb in lab.load_balancers]
    fault, restore = BACKEND_FAULTS[how]

    def status(lb: str) -> str:
        return _server_status(t, lb).get((f"bk_{svc.name}", victim.name), "absent")

    # each check may wait out its timeout before it counts as failed (a hung server)
    interval = lab.health_check.interval_seconds + render.HAPROXY_CHECK_TIMEOUT
    bound = (max(lab.health_check.fall, lab.health_check.rise) + 2) * interval + 5
    args = ["--interval", "0.05", "--timeout", "1", "--duration", str(2 * bound + 15)]
    s = sample(t, site.client, lab.url(svc), list(site.client_sources), *args)
    try:
        wait_until(lambda: s.recovered_since(0.0), 10)
        t0 = time.monotonic()
        drill(t, victim.name, fault, "apache2")
        try:
            down = wait_until(lambda: all(status(lb).startswith("DOWN") for lb in lbs), bound, 0.2)
            t_detect = time.monotonic()
            time.sleep(3)
            t_end = time.monotonic()
        finally:  # restored whatever happens, Ctrl-C included
            t1 = time.monotonic()
            drill(t, victim.name, restore, "apache2")
        before = sum(1 for x in s.since(t0) if not x.ok and x.start < t_detect)
        after = [x for x in s.since(t_detect) if x.start < t_end]
        failed_after = sum(1 for x in after if not x.ok)
        clients = len({x.source for x in after})
        rows = [
            Row(
                f"{victim.name} {how}: out of rotation on every load balancer, no failure after detection",
                down and failed_after == 0 and bool(after),
                (f"detected in {t_detect - t0:.1f} s" if down else f"still in rotation after {t_detect - t0:.1f} s")
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
        s.stop()
