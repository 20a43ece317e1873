"""The provisioning plan: for each node, the ordered steps that configure it (its library
first, then its role's steps: halab/core/roles/), the load balancers' wait until they serve,
and the roll-out's gates; and the order keepalived first starts in."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from halab.core.model import Credentials, Lab, Node
from halab.core.roles import backend, load_balancer
from halab.core.step import Step, library_step


class Role(Protocol):
    """What a kind of node declares, in one module of halab/core/roles/ (a new kind, such as the
    ecmp mode's router, is a new module there and a line in ROLES)."""

    PACKAGES: tuple[str, ...]

    def steps(self, lab: Lab, host: Node, creds: Credentials, /) -> tuple[Step, ...]: ...
    def serving_steps(self, lab: Lab, host: Node, /) -> tuple[Step, ...]: ...
    def gate_steps(self, lab: Lab, host: Node, /) -> tuple[Step, ...]: ...


# A module is a Role by its constant and functions (tests/test_layers.py checks each's signature).
ROLES: dict[str, Role] = {"lb": load_balancer, "backend": backend}


def host_steps(lab: Lab, host: Node, creds: Credentials) -> tuple[Step, ...]:
    """The steps for one node, in the order they must run. The library first, before `ready`:
    every step sources lib.sh, the wait for cloud-init too, and writing one directory of
    /usr/local races nothing cloud-init does. It holds what the node's serving step runs too."""
    steps = tuple(dataclasses.replace(s, library=True) for s in ROLES[host.role].steps(lab, host, creds))
    return (library_step(host.name, steps + serving_steps(lab, host) + gate_steps(lab, host)), *steps)


def serving_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """What a node runs last, after every node's steps (a load balancer: until the lab serves)."""
    return ROLES[host.role].serving_steps(lab, host)


def gate_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """A node's roll-out gates (halab/core/rolling.py): a load balancer's hand-off and drains."""
    return ROLES[host.role].gate_steps(lab, host)


def keepalived_order(lab: Lab) -> tuple[Node, ...]:
    """The load balancers in the order their keepalived must first start: highest priority first.
    Each node starts as BACKUP, and the first whose master-down timer runs out becomes master;
    with `nopreempt` it then stays master whatever the priorities. Started in this order (each
    driver waits for one node's keepalived step before the next's), the preferred node's timer
    runs out first, so the first master is the one the config prefers, and `nopreempt` governs
    only what happens after a failure."""
    return tuple(sorted(lab.load_balancers, key=lambda n: -(n.priority or 0)))


def step_names(lab: Lab, host: Node) -> tuple[str, ...]:
    """Known without credentials, so a driver can declare its resources before secrets resolve."""
    return tuple(s.name for s in host_steps(lab, host, Credentials.placeholder()))
