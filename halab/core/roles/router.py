"""The lab's router in ecmp mode: FRR with a BGP session (and BFD) to every load balancer,
spreading the VIP's flows over those that announce it. The namespace lab's router node runs it
(the VM lab's hypervisor namespace is to, issue #24); a real deployment's router is the user's,
configured after the same file (`scripts/render` writes it; docs/ecmp.md shows it). Not a node
of the model: no Pulumi resource, and not one of plan.ROLES (its steps need no node library)."""

from __future__ import annotations

from halab.core import render
from halab.core.model import Credentials, Lab
from halab.core.step import Step
from halab.node.paths import PATHS as P


def steps(lab: Lab, creds: Credentials, host: str = "router") -> tuple[Step, ...]:
    """One step, carrying its code (the router has no node library)."""
    files = (
        (P["FRR_CONF"], render.frr_router_conf(lab, creds, host)),
        (P["FRR_DAEMONS"], render.whole("frr-daemons.j2")),
    )
    return (Step(host, "router", "router-bgp.sh", files=files, secret=bool(creds.bgp_password)),)
