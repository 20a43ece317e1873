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
        """The serving step, after every node's last step. It runs again whenever any step of
        the lab ran again (a replaced Command has a new ID, and the IDs' hash is a trigger), so
        every `pulumi up` that changed the lab ends when the lab serves."""
        ran = pulumi.Output.all(*(c.id for n in nodes for c in n.commands.values())).apply(
            lambda ids: hashlib.sha256("\n".join(ids).encode()).hexdigest()
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
        return list(made.values())
