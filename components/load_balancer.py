"""A load balancer: its VM, then sysctl, TPROXY, haproxy and keepalived by the plan's steps."""

from __future__ import annotations

import pulumi

from components.node import NodeArgs, ProvisionedNode


class LoadBalancer(ProvisionedNode):
    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("halab:index:LoadBalancer", name, args, opts)
