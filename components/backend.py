"""A backend: its VM, Apache with the who-am-I page, and the VIP as default gateway."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi

from components.node import NodeArgs, ProvisionedNode


class Backend(ProvisionedNode):
    def __init__(
        self,
        name: str,
        args: NodeArgs,
        load_balancers_ready: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        # The gateway moves to the VIP only once every load balancer serves it.
        super().__init__("halab:index:Backend", name, args, opts, extra_after={"gateway": list(load_balancers_ready)})
