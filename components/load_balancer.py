"""A load balancer: its VM, then sysctl, TPROXY, haproxy and keepalived by the plan's steps; and,
once every node is configured, the wait until it serves (plan.serving_steps)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pulumi
import pulumi_command.remote as remote

from components import remote_steps
from components.node import NodeArgs, ProvisionedNode
from halab import plan


class LoadBalancer(ProvisionedNode):
    def __init__(
        self,
        name: str,
        args: NodeArgs,
        keepalived_after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        # keepalived_after: the keepalived steps of the load balancers preferred to this one
        super().__init__(
            "halab:index:LoadBalancer", name, args, opts, extra_after={"keepalived": list(keepalived_after)}
        )

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
            [n.done for n in nodes],
            self.vm.domain.id,
            steps_of=lambda lab, node, _creds: plan.serving_steps(lab, node),
            extra_triggers=[ran],
        )
        return list(made.commands.values())
