"""A load balancer: its VM, then sysctl, TPROXY, haproxy and keepalived by the plan's steps."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi

from components.node import NodeArgs, ProvisionedNode


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
