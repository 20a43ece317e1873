"""Rolling a change out without losing the service: the order in which guests may be replaced,
and the steps that take a node out of service before its guest goes and gate the next one.

- The load balancers one at a time, the backups first and the preferred master last, so the VIP
  moves once. Before a load balancer's guest is deleted, its `handoff` step's delete stops
  keepalived there (a priority-0 advert: a peer takes the VIP at once) and waits for a peer to
  answer on the VIP and for the connections in flight through it to end.
- Then the backends in batches, each batch leaving at least half of every pool it touches (and
  one server at least) in service. Before a backend's guest is deleted, each load balancer's
  `drain-<backend>` step's delete puts it in maintenance in haproxy (no new connection) and
  waits, bounded, for its connections to end.
- A step's create is the gate (plan.gate_steps): the next guest in the order is replaced only
  once it passed (a load balancer that serves every service again; a backend UP on every load
  balancer).

The Pulumi components express the order with what the engine honours (components/lab.py); the
namespace lab runs the same steps' creates as the end of its `up` and their deletes in its drills.
"""

from __future__ import annotations

from halab.core import plan
from halab.core.model import Lab, Node


def load_balancer_order(lab: Lab) -> tuple[Node, ...]:
    """The load balancers in the order their guests are replaced: the lowest priority first, the
    preferred master last, so the VIP leaves its holder once (the reverse of their first start)."""
    return tuple(reversed(plan.keepalived_order(lab)))


def backend_batches(lab: Lab) -> tuple[tuple[Node, ...], ...]:
    """The backends in batches replaced one after the other. A batch takes at most half of each
    pool it touches, and one server at least (a pool of one is out of service while its only
    server is replaced: nothing can keep it serving, and the docs say so)."""
    pools = [set(lab.pool(s)) for s in lab.services]
    batches: list[list[Node]] = []
    for b in lab.backends:
        fits = batches and all(
            len([n for n in batches[-1] if n in pool]) + 1 <= max(1, len(pool) // 2) for pool in pools if b in pool
        )
        if fits:
            batches[-1].append(b)
        else:
            batches.append([b])
    return tuple(tuple(batch) for batch in batches)
