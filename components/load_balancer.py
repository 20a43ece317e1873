"""A load balancer: its VM, then sysctl, TPROXY, haproxy and keepalived by the plan's steps; and,
once every node is configured, the wait until it serves (plan.serving_steps)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pulumi
import pulumi_command.remote as remote

from components import remote_steps, rollout
from components.node import NodeArgs, ProvisionedNode
from halab.core import plan
from halab.core.roles import load_balancer


class LoadBalancer(ProvisionedNode):
    def __init__(
        self,
        name: str,
        args: NodeArgs,
        keepalived_after: pulumi.Input[Sequence[pulumi.Resource]] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        # keepalived_after: the keepalived steps of the load balancers preferred to this one (none
        # in ecmp mode, whose nodes have a `bgp` step instead)
        first = "keepalived" if args.vm.lab.mode == "active-standby" else "bgp"
        super().__init__("halab:index:LoadBalancer", name, args, opts, extra_after={first: keepalived_after})

    def serve_after(self, nodes: Sequence[ProvisionedNode]) -> list[remote.Command]:
        """The serving step, after every node's last step. Its trigger holds every step's
        triggers (each node's `content`), so an `up` that runs any step again for what it
        applies, or on a new guest, ends when the lab serves. (A step re-run only for another
        connection, an update that pulumi-command applies in place, does not count.)"""
        ran = pulumi.Output.all(*(n.content for n in nodes)).apply(
            lambda c: hashlib.sha256("\n".join(c).encode()).hexdigest()
        )
        a = self._args
        made = remote_steps.create_steps(
            self,
            self._name,
            a.vm.lab,
            a.vm.node,
            self._conn,
            a.credentials,
            a.library_files,
            [n.done for n in nodes],
            self.vm.domain.id,
            steps_of=lambda lab, node, _creds: plan.serving_steps(lab, node),
            extra_triggers=[ran],
        )
        return list(made.commands.values())

    def handoff(self, backends: Sequence[ProvisionedNode], is_deployed: pulumi.Output[bool]) -> remote.Command:
        """The VIP's hand-off around this guest's replacement (lb-handoff.sh): its create passes
        once this node serves every service, its delete stops keepalived here first. On the first
        `up` it waits for the backends too: the services have no server before."""
        after = rollout.until_deployed(is_deployed, [b.done for b in backends]).apply(lambda wait: [self.done, *wait])
        step = load_balancer.handoff_step(self._args.vm.lab, self.node)
        ids = [("HALAB_GUEST_ID", self.vm.domain.id)]
        return rollout.gate(self, f"{self._name}-handoff", self.node, self._conn, step, ids, after)

    def drain(self, backend: ProvisionedNode) -> remote.Command:
        """One backend out of this haproxy's service before its guest goes, and back in after
        (lb-drain.sh); replaced with that backend's guest, run again on a new guest of this one."""
        step = load_balancer.drain_step(self._args.vm.lab, self.node, backend.node)
        ids = [("HALAB_BACKEND_ID", backend.vm.domain.id), ("HALAB_LB_ID", self.vm.domain.id)]
        name = f"{self._name}-drain-{backend.node.name}"
        return rollout.gate(self, name, self.node, self._conn, step, ids, [self.done, backend.done])
