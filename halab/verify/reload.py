"""haproxy reloads under steady load: each load balancer's haproxy step run with a backend
removed, then added back; no request may fail."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from halab.core import plan
from halab.core.model import Credentials, Lab, Node
from halab.verify.backends import detection_bound, servers_not_up
from halab.verify.probes import (
    sample,
    wait_until,
)
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext


@dataclass
class ReloadPhase:
    reloads: int
    failed: int
    requests: int
    back_up: bool = False  # "backend added": every server UP again afterwards


def reload_patience(ctx: VerifyContext) -> float:
    """How long a request may wait out a haproxy reload: 2 s on real machines, longer where a
    reload starves the CPU for seconds (emulated guests). Failing means refused or reset, or that slow."""
    return max(2.0, 5 * ctx.request_timeout)


# A step run by a check (the haproxy step of the reload drill): as long as `up` would let it run.
# Seconds on a real machine; a minute or more on an emulated guest under load.
STEP_TIMEOUT = 300.0


def reload_under_load(transport: Transport, ctx: VerifyContext) -> dict[str, ReloadPhase]:
    """Under steady load, each load balancer's haproxy step runs with the last backend removed,
    then with it added back: a master-worker reload per node and phase. Failures are counted per
    phase (1.5 s after each)."""
    lab = ctx.lab
    fewer = dataclasses.replace(lab, backends=lab.backends[:-1])
    creds = Credentials.placeholder()  # the haproxy step holds no secret

    def haproxy_step(model: Lab, lb: Node) -> step.Step:
        return next(s for s in plan.host_steps(model, lb, creds) if s.name == "haproxy")

    # bounded by STEP_TIMEOUT per step; stopped as soon as the phases are done
    args = ["--interval", str(ctx.request_interval / 2), "--timeout", str(reload_patience(ctx))]
    args += ["--duration", str(4 * STEP_TIMEOUT)]
    s = sample(transport, ctx.client, lab.url(lab.services[0]), list(ctx.client_sources), *args)
    phases: dict[str, ReloadPhase] = {}
    bound = detection_bound(lab)
    try:
        wait_until(lambda: s.recovered_since(0.0), 10)
        try:
            for phase, model in (("backend removed", fewer), ("backend added", lab)):
                t0, reloads = time.monotonic(), 0
                for lb in lab.load_balancers:
                    step = haproxy_step(model, lb).bundle()
                    out = transport.run(lb.name, ["bash", "-s"], input=step, timeout=STEP_TIMEOUT).stdout
                    reloads += "reloading haproxy" in out
                time.sleep(1.5)
                s.settle(time.monotonic())
                window = s.since(t0)
                phases[phase] = ReloadPhase(reloads, sum(1 for x in window if not x.ok), len(window))
            # The backend added back is new to haproxy: DOWN until its checks pass (the state file,
            # halab-haproxy-state). It must come back, and the rows after this one find it UP.
            up = wait_until(
                lambda: not any(servers_not_up(transport, lab, lb.name) for lb in lab.load_balancers), bound
            )
            phases["backend added"].back_up = up
        finally:
            if "backend added" not in phases:  # interrupted: every node back on the full config
                for lb in lab.load_balancers:
                    step = haproxy_step(lab, lb).bundle()
                    transport.run(lb.name, ["bash", "-s"], input=step, check=False, timeout=STEP_TIMEOUT)
    finally:
        s.stop(settle=False)  # its windows are read, settled
    return phases


def check_hitless_reload(transport: Transport, ctx: VerifyContext) -> list[Row]:
    lab = ctx.lab
    if len(lab.backends) < 2:
        return [skip("hitless reloads", "one backend only: none to remove")]
    phases = reload_under_load(transport, ctx)
    reloads = sum(p.reloads for p in phases.values())
    failed = sum(p.failed for p in phases.values())
    total = sum(p.requests for p in phases.values())
    back_up = phases["backend added"].back_up
    back = f"{lab.backends[-1].name} {'UP again' if back_up else f'not UP again within {detection_bound(lab):.0f} s'}"
    return [
        Row(
            f"haproxy reloads under load ({lab.backends[-1].name} removed, then back): no request fails",
            failed == 0 and reloads == 2 * len(lab.load_balancers) and total > 0 and back_up,
            f"{reloads} reloads, {failed} failed of {total} requests; {back}",
        )
    ]
