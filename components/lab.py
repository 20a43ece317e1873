"""The Pulumi component for the whole lab (LabComponent); the lab itself is the model's Lab."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt
import pulumi_tls as tls

from components import image, rollout
from components.backend import Backend
from components.load_balancer import LoadBalancer
from components.network import LabNetwork, LabNetworkArgs
from components.node import NodeArgs
from components.remote_steps import LibraryFiles
from components.vm import VmArgs
from halab.core import plan, rolling
from halab.core.model import Credentials, Lab, Node


@dataclass
class LabComponentArgs:
    lab: Lab
    """The validated lab model (components/stack_config.py)."""
    credentials: Credentials
    """The VRRP and stats passwords: into resources only as secrets (components/remote_steps.py)."""
    library_files: LibraryFiles
    """Where each node's library bundle is written for its copy (__main__: the stack's cache)."""
    ssh_private_key: pulumi.Output[str] | None = None
    """Secret, with `lab.ssh.public_key`; None: an ED25519 pair is generated and kept in the state."""


class LabComponent(pulumi.ComponentResource):
    """The whole lab, as Pulumi resources (type halab:index:Lab): libvirt provider, network,
    shared base image, SSH key, the load balancers and the backends, and the roll-out's order."""

    def __init__(self, name: str, args: LabComponentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("halab:index:Lab", name, None, opts)
        lab = args.lab
        # One provider per hypervisor; each node is created through its own host's.
        providers = {
            hv.name: libvirt.Provider(f"{name}-libvirt-{hv.name}", uri=hv.uri, opts=pulumi.ResourceOptions(parent=self))
            for hv in lab.libvirt.hypervisors
        }

        def on(hv: str) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, providers={"libvirt": providers[hv]})

        self.generated_ssh_key: pulumi.Output[str] | None = None
        if lab.ssh.public_key is not None and args.ssh_private_key is not None:
            public_key: pulumi.Input[str] = lab.ssh.public_key
            private_key: pulumi.Output[str] = args.ssh_private_key
        else:
            key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
            public_key, private_key = key.public_key_openssh, pulumi.Output.secret(key.private_key_openssh)
            self.generated_ssh_key = private_key

        # A libvirt network lives on one host; spread over several, the nodes join an existing
        # bridge on each (network.mode: bridge) and there is no network resource.
        self.network = None
        if lab.network.mode != "bridge":
            (only,) = lab.libvirt.hypervisors
            self.network = LabNetwork(f"{name}-network", LabNetworkArgs(lab.network), opts=on(only.name))
        base_name = image.base_volume_name(lab)
        bases = image.base_volumes(self, name, lab, on)

        # A change that replaces guests rolls out one load balancer, then one batch of backends,
        # at a time, once the lab is deployed (components/rollout.py): each domain waits for the
        # gates of the guests before it, known only once every node exists (resolved below).
        is_deployed = rollout.deployed(name, self)
        replace_after = {n.name: pulumi.deferred_output() for n in lab.nodes}

        def node_args(node: Node) -> NodeArgs:
            vm = VmArgs(
                lab=lab,
                node=node,
                base_volume_id=bases[node.hypervisor].id,
                base_volume_name=base_name,
                network_id=self.network.network_id if self.network else None,
                ssh_public_key=public_key,
                replace_after=replace_after[node.name][0],
            )
            return NodeArgs(
                vm=vm,
                ssh_private_key=private_key,
                credentials=args.credentials,
                library_files=args.library_files,
            )

        # keepalived first starts on one load balancer after another, the preferred master first:
        # the first master is then the one the config prefers, nopreempt or not
        # (plan.keepalived_order). Not once deployed: the roll-out's order is the reverse. In ecmp
        # mode there is no election: each load balancer's steps run on their own.
        made: dict[str, LoadBalancer] = {}
        for n in plan.keepalived_order(lab):
            prev = [made[p].commands["keepalived"] for p in list(made)[-1:]] if lab.mode == "active-standby" else []
            after = rollout.until_deployed(is_deployed, prev)
            made[n.name] = LoadBalancer(f"{name}-{n.name}", node_args(n), after, opts=on(n.hypervisor))
        self.load_balancers = [made[n.name] for n in lab.load_balancers]
        ready = [lb.done for lb in self.load_balancers]
        self.backends = [Backend(f"{name}-{n.name}", node_args(n), ready, opts=on(n.hypervisor)) for n in lab.backends]
        self.handoffs = {lb.node.name: lb.handoff(self.backends, is_deployed) for lb in self.load_balancers}
        self.drains = {(lb.node.name, b.node.name): lb.drain(b) for lb in self.load_balancers for b in self.backends}
        args.library_files.prune()  # every node's library written above
        # the order: each guest after the gates of the guests before it (halab/core/rolling.py)
        before: list[pulumi.Resource] = []
        for n in rolling.load_balancer_order(lab):
            replace_after[n.name][1](rollout.once_deployed(is_deployed, before))
            before = [self.handoffs[n.name]]
        for batch in rolling.backend_batches(lab):
            for n in batch:
                replace_after[n.name][1](rollout.once_deployed(is_deployed, before))
            before = [self.drains[(lb.name, n.name)] for lb in lab.load_balancers for n in batch]
        # `pulumi up` ends when the lab serves: each load balancer's haproxy calls every pool
        # server UP, after every node's last step
        everyone = [*self.load_balancers, *self.backends]
        self.serving = [c for lb in self.load_balancers for c in lb.serve_after(everyone)]

        vip = str(lab.vip)

        def jump(n) -> str:
            hop = lab.libvirt.hypervisor(n.hypervisor).jump_host
            return f" -J {hop.rsplit(':', 1)[0]}" if hop else ""

        self.vip = vip
        self.urls = {s.name: lab.url(s) for s in lab.services}
        key_file = "halab-key" if self.generated_ssh_key is not None else "<your key>"
        self.ssh_hints = {n.name: f"ssh -i {key_file}{jump(n)} {lab.ssh.user}@{n.address}" for n in lab.nodes}
        self.lb_addresses = {n.name: str(n.address) for n in lab.load_balancers}
        self.stats_urls = (
            {n.name: f"http://{n.address}:{lab.haproxy.stats_port}/" for n in lab.load_balancers}
            if lab.haproxy.stats_port
            else {}
        )
        # HAProxy's Prometheus exporter, behind the stats password (a scrape job's basic_auth)
        self.metrics_urls = {n: f"{url}metrics" for n, url in self.stats_urls.items()}
        self.backend_addresses = {n.name: str(n.address) for n in lab.backends}
        self.register_outputs(
            {
                "vip": vip,
                "load_balancers": self.lb_addresses,
                "backends": self.backend_addresses,
                "urls": self.urls,
                "stats": self.stats_urls,
                "metrics": self.metrics_urls,
                "ssh": self.ssh_hints,
            }
        )
