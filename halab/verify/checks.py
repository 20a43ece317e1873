"""What `verify` proves, one row per claim with the figure that backs it: the list of checks,
in the order they run, and the report.

Every probe and every fault is a command on one lab host, through a `Transport`: requests come
from the client hosts, faults hit only the node under test, and each drill restores what it
broke before it returns (drills.py). Every wait is bounded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from halab.verify.backends import check_backend_health, check_backends_up
from halab.verify.drills import Unanswered
from halab.verify.ecmp import check_bgp, check_ecmp_failovers, check_ecmp_shares
from halab.verify.ecmp_sessions import check_ecmp_sessions
from halab.verify.failover import (
    check_failovers,
    check_persistence_across_failover,
)
from halab.verify.handoff import check_planned_handoff
from halab.verify.observe import check_metrics, check_stats_pages
from halab.verify.reload import check_hitless_reload
from halab.verify.rows import Row, table
from halab.verify.traffic import check_pools, check_services, check_spread, check_stickiness
from halab.verify.transport import Transport, VerifyContext
from halab.verify.vrrp import (
    check_transition_log,
    check_vip,
    check_vrrp_filter,
)

CHECKS = (
    check_vip,
    check_backends_up,
    check_services,
    check_spread,
    check_pools,
    check_stickiness,
    check_vrrp_filter,
    check_stats_pages,
    check_metrics,
    check_hitless_reload,
    check_backend_health,
    check_persistence_across_failover,
    check_planned_handoff,
    check_failovers,
    check_transition_log,
)

# ecmp mode (docs/ecmp.md): no VRRP, every load balancer carries a share
ECMP_CHECKS = (
    check_bgp,
    check_backends_up,
    check_services,
    check_ecmp_shares,
    check_pools,
    check_stickiness,
    check_stats_pages,
    check_metrics,
    check_hitless_reload,
    check_backend_health,
    check_ecmp_failovers,
    check_ecmp_sessions,
)


# The checks that change the lab (faults, reloads, rogue adverts): `--read-only` leaves them
# out, and check_spread then leaves sticky services' tables alone.
CHANGES_THE_LAB = {
    check_vrrp_filter,
    check_hitless_reload,
    check_backend_health,
    check_persistence_across_failover,
    check_planned_handoff,
    check_failovers,
    check_ecmp_failovers,
    check_ecmp_sessions,
}


def verify(transport: Transport, ctx: VerifyContext, log: Callable[[Row], None] = lambda r: None) -> list[Row]:
    rows: list[Row] = []
    for check in ECMP_CHECKS if ctx.lab.mode == "ecmp" else CHECKS:
        if ctx.read_only and check in CHANGES_THE_LAB:
            continue
        try:
            got = check(transport, ctx)
        except (Unanswered, subprocess.TimeoutExpired) as e:  # one stuck host hides no later row
            got = [Row(check.__name__.removeprefix("check_").replace("_", " "), False, f"a host did not answer: {e}")]
        for row in got:
            log(row)
            rows.append(row)
    return rows


def run_and_report(transport: Transport, ctx: VerifyContext) -> int:
    """Runs every check, printing each result as it comes, then the table and the counts;
    returns the exit status (0: nothing failed)."""
    rows = verify(transport, ctx, log=lambda r: print(f"  {r.result}  {r.check}", flush=True))
    failed = sum(1 for r in rows if not r.ok)
    skipped = sum(1 for r in rows if r.skipped)
    print(f"\n{table(rows)}\n\n{len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0
