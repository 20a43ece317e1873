"""The operator's planned hand-off of one load balancer (`scripts/netns-lab handoff NODE`,
`scripts/vm-lab handoff NODE`): the very step a roll-out runs before it deletes a load
balancer's guest (lb-handoff.sh, as its delete). keepalived stops there, a peer takes the VIP at
once, and the step waits, bounded by vrrp.handoffDrainSeconds, for the connections this node
holds to end (docs/handoff.md); it names those it gives up on. The node is then free to go;
`up` brings its keepalived back."""

from __future__ import annotations

import subprocess

from halab.core.model import Lab
from halab.core.roles import load_balancer
from halab.verify.transport import Transport


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
