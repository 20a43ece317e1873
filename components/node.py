"""What load balancers and backends share: a VM, then the plan's steps run on it in order."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components import remote_steps
from components.vm import Vm, VmArgs
from halab.model import Lab, Node
from halab.render import Credentials


@dataclass
class NodeArgs:
    lab: Lab
    """The validated lab model."""
    node: Node
    """Which node of the model this is."""
    base_volume_id: pulumi.Input[str]
    """The shared cloud image volume."""
    network_id: pulumi.Input[str] | None
    """The lab network; None in bridge mode."""
    ssh_public_key: pulumi.Input[str]
    """Authorised on the node for the lab's SSH user."""
    ssh_private_key: pulumi.Input[str]
    """Secret: how the remote commands log in."""
    credentials: pulumi.Output[Credentials]
    """Secret: the VRRP and stats passwords (load balancers only)."""
    ssh_agent_socket: str | None = None
    """The user's SSH agent, for the jump through a remote libvirt host."""


class ProvisionedNode(pulumi.ComponentResource):
    """A VM and the remote commands that make it a load balancer or a backend."""

    commands: dict

    def __init__(
        self,
        type_token: str,
        name: str,
        args: NodeArgs,
        opts: pulumi.ResourceOptions | None,
        extra_after: dict[str, list[pulumi.Resource]] | None = None,
    ):
        super().__init__(type_token, name, None, opts)
        self.vm = Vm(
            f"{name}-vm",
            VmArgs(args.lab, args.node, args.base_volume_id, args.network_id, args.ssh_public_key),
            opts=pulumi.ResourceOptions(parent=self),
        )
        conn = remote_steps.connection(args.lab, args.node, args.ssh_private_key, args.ssh_agent_socket)
        self.commands = remote_steps.create_steps(
            self, name, args.lab, args.node, conn, args.credentials, [self.vm], extra_after
        )
        self.address = str(args.node.address)
        self.register_outputs({"address": self.address, "domain_name": self.vm.domain_name})

    @property
    def done(self) -> pulumi.Resource:
        """The last step: the node is fully configured once it has run."""
        return list(self.commands.values())[-1]
