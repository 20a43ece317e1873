"""The lab network: a libvirt network with static addressing (no DHCP: guests get fixed
addresses from cloud-init, so nothing waits for a lease)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from halab.core.model import Network


@dataclass
class LabNetworkArgs:
    network: Network
    """The validated network model (name, CIDR, mode)."""


class LabNetwork(pulumi.ComponentResource):
    network_id: pulumi.Output[str]

    def __init__(self, name: str, args: LabNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("halab:index:LabNetwork", name, None, opts)
        net = args.network
        self.network = libvirt.Network(
            f"{name}-net",
            name=net.name,
            mode=net.mode,
            # libvirt gives the host bridge the first address: the model's gateway.
            addresses=[str(net.cidr)],
            autostart=True,
            dhcp=libvirt.NetworkDhcpArgs(enabled=False),
            dns=libvirt.NetworkDnsArgs(enabled=True, local_only=False),
            # its name stays: a replacement must not be created beside the old one. The provider
            # ignores a change of dns.enabled or localOnly (halab/drivers/vmlab/schema.py): replaced.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, replace_on_changes=["dns"]),
        )
        self.network_id = self.network.id
        self.register_outputs({"network_id": self.network_id})
