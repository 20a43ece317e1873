"""Rows about the backend servers as haproxy sees them: every server passes its health check,
and a failed backend leaves the rotation and comes back."""

from __future__ import annotations

import csv
import io
import time

from halab.verify.probes import (
    drill,
    sample,
    wait_until,
)
from halab.verify.rows import Row
from halab.verify.transport import Site, Transport


def _server_status(t: Transport, lb: str) -> dict[tuple[str, str], str]:
    """(haproxy backend, server) -> health status (UP, DOWN, ...), from lb's runtime API."""
    stat = drill(t, lb, "haproxy-api", "show", "stat", check=False).stdout
    rows = csv.reader(io.StringIO(stat.lstrip("# ")))
    return {(r[0], r[1]): r[17] for r in rows if len(r) > 17 and r[1] not in ("FRONTEND", "BACKEND", "svname")}


def check_backends_up(t: Transport, site: Site) -> list[Row]:
    """Every server of every service is UP on every load balancer (its health check passes)."""
    lab = site.lab
    want = {(f"bk_{svc.name}", b.name) for svc in lab.services for b in lab.backends}
    rows = []
    for lb in lab.load_balancers:
        status = _server_status(t, lb.name)
        down = sorted(f"{bk}/{srv} {status.get((bk, srv), 'absent')}" for bk, srv in want
                      if not status.get((bk, srv), "").startswith("UP"))  # fmt: skip
        fig = f"{len(want) - len(down)}/{len(want)} UP" + (f"; not UP: {', '.join(down)}" if down else "")
        rows.append(Row(f"every backend server passes its health check on {lb.name}", not down, fig))
    return rows


def check_backend_health(t: Transport, site: Site) -> list[Row]:
    """A backend stopped leaves the rotation once health checks see it, with no failed request
    after that; started again, it comes back."""
    lab = site.lab
    svc, victim = lab.services[0], lab.backends[0]
    lbs = [lb.name for lb in lab.load_balancers]

    def status(lb: str) -> str:
        return _server_status(t, lb).get((f"bk_{svc.name}", victim.name), "absent")

    interval = lab.health_check.interval_seconds
    bound = (max(lab.health_check.fall, lab.health_check.rise) + 2) * interval + 5
    s = sample(
        t,
        site.client,
        lab.url(svc),
        list(site.client_sources),
        "--interval",
        "0.05",
        "--timeout",
        "1",
        "--duration",
        str(2 * bound + 15),
    )
    try:
        wait_until(lambda: s.recovered_since(0.0), 10)
        t0 = time.monotonic()
        drill(t, victim.name, "stop", "apache2")
        try:
            down = wait_until(lambda: all(status(lb).startswith("DOWN") for lb in lbs), bound, 0.2)
            t_detect = time.monotonic()
            time.sleep(3)
            t_end = time.monotonic()
        finally:  # started again whatever happens, Ctrl-C included
            t1 = time.monotonic()
            drill(t, victim.name, "start", "apache2")
        before = sum(1 for x in s.since(t0) if not x.ok and x.start < t_detect)
        after = [x for x in s.since(t_detect) if x.start < t_end]
        failed_after = sum(1 for x in after if not x.ok)
        rows = [
            Row(
                f"{victim.name} stopped: out of rotation on every load balancer, no failure after detection",
                down and failed_after == 0 and bool(after),
                f"detected in {t_detect - t0:.1f} s; {failed_after} failed of {len(after)} after, {before} before",
            )
        ]
        up = wait_until(lambda: all(status(lb).startswith("UP") for lb in lbs), bound, 0.2)
        rows.append(
            Row(
                f"{victim.name} started: back in rotation",
                up,
                f"UP on every load balancer after {time.monotonic() - t1:.1f} s",
            )
        )
        return rows
    finally:
        s.stop()
