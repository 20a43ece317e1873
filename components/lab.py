"""The whole lab: libvirt provider, network, shared base image, SSH key, load balancers, backends."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt
import pulumi_tls as tls

from components.backend import Backend
from components.load_balancer import LoadBalancer
from components.network import LabNetwork, LabNetworkArgs
from components.node import NodeArgs
from halab.model import Lab as LabModel
from halab.render import Credentials


@dataclass
class LabArgs:
    lab: LabModel
    """The validated lab model (components/stack_config.py)."""
    credentials: pulumi.Output[Credentials]
    """Secret: the VRRP and stats passwords."""
    ssh_private_key: pulumi.Output[str] | None = None
    """Secret, with `lab.ssh.public_key`; None: an ED25519 pair is generated and kept in the state."""
    ssh_agent_socket: str | None = None
    """The user's SSH agent, used to jump through a remote libvirt host."""


def service_url(vip: str, port: int) -> str:
    return {80: f"http://{vip}/", 443: f"https://{vip}/"}.get(port, f"tcp://{vip}:{port}")


class Lab(pulumi.ComponentResource):
    def __init__(self, name: str, args: LabArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("halab:index:Lab", name, None, opts)
        lab = args.lab
        provider = libvirt.Provider(f"{name}-libvirt", uri=lab.libvirt.uri, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, providers={"libvirt": provider})

        self.generated_ssh_key: pulumi.Output[str] | None = None
        if lab.ssh.public_key is not None and args.ssh_private_key is not None:
            public_key: pulumi.Input[str] = lab.ssh.public_key
            private_key: pulumi.Output[str] = args.ssh_private_key
        else:
            key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
            public_key, private_key = key.public_key_openssh, pulumi.Output.secret(key.private_key_openssh)
            self.generated_ssh_key = private_key

        self.network = LabNetwork(f"{name}-network", LabNetworkArgs(lab.network), opts=child)
        base = libvirt.Volume(
            f"{name}-base-image",
            name=f"{lab.network.name}-base.qcow2",
            pool=lab.libvirt.pool,
            source=lab.libvirt.image,
            format="qcow2",
            opts=child,
        )

        def node_args(node) -> NodeArgs:
            return NodeArgs(
                lab=lab,
                node=node,
                base_volume_id=base.id,
                network_id=self.network.network_id,
                ssh_public_key=public_key,
                ssh_private_key=private_key,
                credentials=args.credentials,
                ssh_agent_socket=args.ssh_agent_socket,
            )

        self.load_balancers = [LoadBalancer(f"{name}-{n.name}", node_args(n), opts=child) for n in lab.load_balancers]
        ready = [lb.done for lb in self.load_balancers]
        self.backends = [Backend(f"{name}-{n.name}", node_args(n), ready, opts=child) for n in lab.backends]

        vip = str(lab.vip)
        jump = f" -J {lab.libvirt.jump_host.rsplit(':', 1)[0]}" if lab.libvirt.jump_host else ""
        self.vip = vip
        self.urls = {s.name: service_url(vip, s.port) for s in lab.services}
        key_file = "halab-key" if self.generated_ssh_key is not None else "<your key>"
        self.ssh_hints = {n.name: f"ssh -i {key_file}{jump} {lab.ssh.user}@{n.address}" for n in lab.nodes}
        self.lb_addresses = {n.name: str(n.address) for n in lab.load_balancers}
        self.stats_urls = (
            {n.name: f"http://{n.address}:{lab.haproxy.stats_port}/" for n in lab.load_balancers}
            if lab.haproxy.stats_port
            else {}
        )
        self.backend_addresses = {n.name: str(n.address) for n in lab.backends}
        self.register_outputs(
            {
                "vip": vip,
                "load_balancers": self.lb_addresses,
                "backends": self.backend_addresses,
                "urls": self.urls,
                "stats": self.stats_urls,
                "ssh": self.ssh_hints,
            }
        )
