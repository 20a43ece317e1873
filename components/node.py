"""What load balancers and backends share: a VM, then the plan's steps run on it in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command.remote as remote

from components import remote_steps
from components.vm import Vm, VmArgs
from halab.core.model import Credentials


@dataclass
class NodeArgs:
    vm: VmArgs
    """The VM: lab model, node, base image, network, authorised key."""
    ssh_private_key: pulumi.Input[str]
    """Secret: how the remote commands log in."""
    credentials: Credentials
    """The VRRP and stats passwords (the load balancers' steps use them): into resources only as
    secrets."""
    library_files: remote_steps.LibraryFiles
    """Where the node's library bundle is written for its copy (shared by the lab's nodes)."""


class ProvisionedNode(pulumi.ComponentResource):
    """A VM and the remote commands that make it a load balancer or a backend."""

    commands: dict[str, remote.Command]

    def __init__(
        self,
        type_token: str,
        name: str,
        args: NodeArgs,
        opts: pulumi.ResourceOptions | None,
        extra_after: dict[str, pulumi.Input[Sequence[pulumi.Resource]]] | None = None,
    ):
        super().__init__(type_token, name, None, opts)
        lab, node = args.vm.lab, args.vm.node
        self.vm = Vm(f"{name}-vm", args.vm, opts=pulumi.ResourceOptions(parent=self))
        self._name, self._args, self.node = name, args, node
        self._conn = remote_steps.connection(lab, node, args.ssh_private_key)
        made = remote_steps.create_steps(
            self,
            name,
            lab,
            node,
            self._conn,
            args.credentials,
            args.library_files,
            [self.vm],
            self.vm.domain.id,
            extra_after,
        )
        self.commands, self.content = made.commands, made.content
        self.address = str(node.address)
        self.register_outputs({"address": self.address, "domain_name": self.vm.domain_name})

    @property
    def done(self) -> pulumi.Resource:
        """The last step: the node is fully configured once it has run."""
        return list(self.commands.values())[-1]
