"""A change that replaces guests, rolled out one load balancer and one batch of backends at a
time (halab/core/rolling.py: the order, and the steps that take a node out of service first).

How the engine is made to honour it (pulumi v3.259.0, pkg/resource/deploy/step_generator.go):
- **The order.** Once the lab is deployed, each guest's domain `depends_on` the gates of the
  guests before it. The SDK registers a resource only once every resource it depends on has
  finished (its RegisterResource returned), so the engine diffs, and replaces, a domain only
  after the previous guest is back and its gate passed. On the first `up` there is nothing to
  keep serving: no gate, every guest is created at once. The program knows which by reading its
  own stack's last outputs (a StackReference to itself: the engine's builtin provider reads the
  stack's latest checkpoint, builtins.go readStackReference; the stack resource keeps its old
  outputs until the program registers new ones, step.go SameStep.Apply).
- **Out of service first.** A gate is a Command whose only trigger is the guest's domain ID,
  with a `delete`. A domain is replaced delete-before-replace (components/vm.py), so before
  deleting it the engine deletes each resource whose inputs depend on its ID and whose diff,
  with that ID unknown, replaces it: the gate, by its `triggers[*]` replaceOnChanges
  (calculateDependentReplacements, lines 3220-3361; the deletes run in reverse dependency
  order, lines 2080-2130). pulumi-command runs `delete` then (commandController.go Delete), on
  the old guest, with the stdin it was created with.
- **A removed node** is deleted after the update's registrations, dependents first
  (ScheduleDeletes): each backend's drain steps before its guest, a load balancer's hand-off
  before its guest.
- **A drain is not replaced with its load balancer.** Its delete then would put every backend in
  maintenance on a load balancer that may still hold the VIP, in an order the engine does not
  fix against the hand-off. The load balancer's domain ID is in its `create` instead: a new
  load balancer makes it an update, which runs the create there (the backend in service, UP,
  and remembered for a later delete) and no delete.
- **A gate is never replaced for its content.** Its bundle is not a trigger: a changed bundle is
  an update (pulumi-command runs `create` again), which runs no `delete`. A replacement for its
  content would be created first and delete the old one at the end: draining a backend, or
  stopping keepalived, that stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_command.remote as remote

from halab.core.model import Node
from halab.core.step import Step


def deployed(name: str, parent: pulumi.Resource) -> pulumi.Output[bool]:
    """Whether the stack has been deployed: its last `up` exported the load balancers."""
    org = pulumi.get_organization() or "organization"
    ref = pulumi.StackReference(
        f"{name}-deployed",
        stack_name=f"{org}/{pulumi.get_project()}/{pulumi.get_stack()}",
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return ref.get_output("load_balancers").apply(bool)


def once_deployed(is_deployed: pulumi.Output[bool], resources: Sequence[pulumi.Resource]) -> pulumi.Output[list]:
    """`resources` to depend on once the lab is deployed; none on the first `up`."""
    return is_deployed.apply(lambda d: list(resources) if d else [])


def until_deployed(is_deployed: pulumi.Output[bool], resources: Sequence[pulumi.Resource]) -> pulumi.Output[list]:
    """`resources` to depend on on the first `up` only."""
    return is_deployed.apply(lambda d: [] if d else list(resources))


def gate(
    parent: pulumi.Resource,
    name: str,
    node: Node,
    conn: remote.ConnectionArgs,
    step: Step,
    ids: Sequence[tuple[str, pulumi.Input[str]]],
    after: pulumi.Input[Sequence[pulumi.Resource]],
) -> remote.Command:
    """A gate on `node` (where it runs): `step` as its create, the same bundle with
    HALAB_ON_DELETE=1 as its delete. `ids` (variables, domain IDs) name in both the guests it
    was made for, so that its delete changes nothing once another guest took that place (a
    replacement created before the old one is deleted, when a guest deleted out of band is made
    again). The first is its only trigger: it is replaced (deleted first) exactly when that
    guest is; another guest named there, when replaced, only runs its create again, in place."""
    env = pulumi.Output.all(*(guest for _, guest in ids)).apply(
        lambda gs: " ".join([f"HALAB_GUEST={node.name}", *(f"{var}={g}" for (var, _), g in zip(ids, gs, strict=True))])
    )
    return remote.Command(
        name,
        connection=conn,
        create=env.apply(lambda e: f"sudo env {e} bash -s"),
        delete=env.apply(lambda e: f"sudo env {e} HALAB_ON_DELETE=1 bash -s"),
        stdin=step.bundle(),
        triggers=[ids[0][1]],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
