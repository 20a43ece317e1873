"""ecmp mode's failover figures, beside active-standby's (issue #24): the verifier's two ecmp
drills (ecmp.plan: haproxy killed, a link cut), each `trials` times under the same client as
the active-standby drills (a request every 10 ms, from each client address in turn, each given
0.3 s).
In ecmp mode a fault costs only the requests the router still hashes to the node that failed,
until its path is gone; so the figures are the time to that at the router, and the requests
failed meanwhile."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from halab.bench.measure import REQUEST_INTERVAL, Spread
from halab.verify import drills, ecmp
from halab.verify.probes import sample
from halab.verify.transport import Transport, VerifyContext


@dataclass
class EcmpFault:
    node: str
    gone: Spread  # fault to the path gone at the router
    failed: Spread  # requests failed from the fault to the path back
    sent: Spread  # requests sent meanwhile
    back: Spread  # restore to the path back
    errors: list[str] = field(default_factory=list)


def failovers(transport: Transport, ctx: VerifyContext, trials: int, log) -> dict[str, EcmpFault]:
    lab = ctx.lab
    url = lab.url(lab.services[0])
    args = ["--interval", str(REQUEST_INTERVAL), "--timeout", "0.3", "--duration", "300"]
    out = {}
    for lb, drill, _, _ in ecmp.plan(lab):
        gone, back, failed, sent, errors = [], [], [], [], []
        for i in range(trials):
            s = sample(transport, ctx.client, url, list(ctx.client_sources), *args)
            try:
                time.sleep(1.0)
                w = ecmp.withdrawal(transport, ctx, lb, drill)
                if w.took is None or w.back is None:
                    errors.append(f"trial {i + 1}: " + ("not withdrawn" if w.took is None else "not back"))
                    continue
                end = w.restored_at + w.back  # the path back at the router
                s.settle(end)
                window = [x for x in s.since(w.at) if x.start <= end]
            finally:
                s.stop(settle=False)
            gone.append(w.took)
            back.append(w.back)
            n_failed = drills.outage(window, w.at, end).failed
            failed.append(float(n_failed))
            sent.append(float(len(window)))
            log(f"    ecmp {drill} #{i + 1}: path gone in {w.took:.2f} s, {n_failed} failed, back {w.back:.1f} s")
        out[drill] = EcmpFault(lb.name, Spread.of(gone), Spread.of(failed), Spread.of(sent), Spread.of(back), errors)
    return out


def section(faults: dict[str, EcmpFault], trials: int) -> list[str]:
    """The report's table of ecmp mode's faults, after active-standby's."""
    if not faults:
        return []
    lines = [
        "### ecmp mode",
        "",
        "`tests/stacks/Pulumi.ecmp.yaml` (three load balancers announcing the VIP, BFD 100 ms × 3), the same "
        f"client, {trials} trials per fault. The other load balancers serve all along: the requests lost are "
        "those the router still sent to the failed node. *Path gone*: from the fault's own timestamp to the "
        "router's route to the VIP without that node (the kernel's, polled every 10 ms on the router). "
        "*Failed requests*: from the fault to the path back after the restore, of those sent meanwhile.",
        "",
        "| fault | node | path gone | failed requests | of | restore: path back |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for drill, f in faults.items():
        lines.append(
            f"| {drill} | {f.node} | {f.gone.text()} | {f.failed.text('', 0)} | {f.sent.text('', 0)} "
            f"| {f.back.text()} |"
        )
    errors = [f"- {d}: {e}" for d, f in faults.items() for e in f.errors]
    return [*lines, *(["", "Trials that failed:", "", *errors] if errors else []), ""]
