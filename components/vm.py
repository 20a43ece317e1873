"""One guest: a root volume on the shared base image, a cloud-init disk, and the domain.

Replacements, as terraform-provider-libvirt v0.8.1 and the engine make them:
- A volume's ID is its libvirt key (its path), so a volume replaced under the same name keeps
  its ID and nothing that uses it would notice. The root volume's name therefore carries what
  makes it (the base image and the disk size): a new image or size is a new volume with a new
  ID, so a new domain (its disks changed), so new steps (their triggers hold the domain's ID).
- The provider swaps a changed cloud-init disk into the running domain in place, and the guest
  never reads it again. The domain is replaced instead (`replace_on_changes`), and the
  instance-id changes with the user-data (render.cloud_init), so cloud-init runs its
  per-instance modules (users, keys) again on the kept root volume.
- Names are fixed, and the engine creates a replacement before deleting the old one by default:
  the domain, whose name stays, is deleted first.
- The provider plans a change inside a block (the root disk's volume, a NIC's network, bridge or
  MAC) as an update, and its Update then ignores it: `pulumi up` reports success and the guest
  is unchanged (halab/drivers/vmlab/schema.py, pinned to its source). The domain names those blocks in
  `replace_on_changes`, so such a change replaces it. A replaced lab network (another mode: its
  name stays, so it is deleted first) replaces every domain on it, deleted before the network:
  the engine makes a delete-before-replace resource's dependents' inputs unknown and replaces
  those whose diff, replaceOnChanges applied, says so (pkg/resource/deploy/step_generator.go,
  calculateDependentReplacements, lines 3220-3361 at v3.259.0).
- The root disk is attached as a file (the domain's XSLT), so that a stock AppArmor profile
  allows its backing chain (halab/node/templates/domain-disk-as-file.xslt.j2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_libvirt as libvirt

from halab.core import render
from halab.core.model import Lab, Node

GIB = 1024**3
# The domain's inputs whose change the provider would apply in place (cloudinit: the guest never
# reads it again) or not at all (the rest, inside blocks: halab/drivers/vmlab/schema.py): replaced.
DOMAIN_REPLACE_ON_CHANGES = ("cloudinit", "disks", "networkInterfaces", "cpu", "consoles", "xml")


@dataclass
class VmArgs:
    lab: Lab
    """The validated lab model (sizes, pool, network, domain type)."""
    node: Node
    """The node this VM is."""
    base_volume_id: pulumi.Input[str]
    """The cloud image volume every VM's root volume is a copy-on-write layer of."""
    base_volume_name: str
    """Its name, which names the image it holds (image.base_volume_name)."""
    network_id: pulumi.Input[str] | None
    """The lab network to attach to; None in bridge mode (the lab model names the bridge)."""
    ssh_public_key: pulumi.Input[str]
    """Authorised for the lab's SSH user by cloud-init."""
    replace_after: pulumi.Input[Sequence[pulumi.Resource]] = ()
    """What the domain waits for: the gates of the guests replaced before it in a roll-out
    (components/rollout.py)."""


class Vm(pulumi.ComponentResource):
    domain_name: str

    def __init__(self, name: str, args: VmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("halab:index:Vm", name, None, opts)
        lab, node = args.lab, args.node
        size = lab.vm.of(node)
        self.domain_name = f"{lab.network.name}-{node.name}"
        child = pulumi.ResourceOptions(parent=self)

        made_of = hashlib.sha256(f"{args.base_volume_name}|{size.disk_gib}".encode()).hexdigest()[:8]
        root = libvirt.Volume(
            f"{name}-root",
            name=f"{self.domain_name}-root-{made_of}.qcow2",
            pool=lab.libvirt.pool,
            base_volume_id=args.base_volume_id,
            format="qcow2",
            size=size.disk_gib * GIB,
            opts=child,
        )
        ci = pulumi.Output.from_input(args.ssh_public_key).apply(lambda key: render.cloud_init(lab, node, key))
        cloudinit = libvirt.CloudInitDisk(
            f"{name}-cloudinit",
            # named by its content, like the root volume: a changed one is created beside the
            # old one, which is deleted once the domain no longer uses it
            name=ci["meta-data"].apply(
                lambda m: f"{self.domain_name}-cloudinit-{hashlib.sha256(m.encode()).hexdigest()[:8]}.iso"
            ),
            pool=lab.libvirt.pool,
            user_data=ci["user-data"],
            meta_data=ci["meta-data"],
            network_config=ci["network-config"],
            opts=child,
        )
        kvm = lab.libvirt.domain_type == "kvm"
        self.domain = libvirt.Domain(
            f"{name}-domain",
            name=self.domain_name,
            type=lab.libvirt.domain_type,
            vcpu=size.vcpu,
            memory=size.memory_mib,
            autostart=True,
            cpu=libvirt.DomainCpuArgs(mode="host-passthrough") if kvm else None,
            cloudinit=cloudinit.id,
            disks=[libvirt.DomainDiskArgs(volume_id=root.id)],
            # the provider's own `file` disks are always raw (domain.go setDisks): a qcow2 layer
            # would boot as garbage. The volume's disk, qcow2 driver and all, becomes a file.
            xml=libvirt.DomainXmlArgs(xslt=root.id.apply(render.domain_disk_xslt)),
            network_interfaces=[
                # The address is static, from cloud-init (matched by this MAC). No `addresses`
                # here: the provider would add them as DHCP host entries, and the network has
                # no DHCP. No lease wait either (unreliable in terraform-provider-libvirt
                # 0.8.x): the first remote command waits for SSH instead.
                libvirt.DomainNetworkInterfaceArgs(
                    network_id=args.network_id,
                    bridge=lab.network.bridge if args.network_id is None else None,
                    mac=node.mac,
                    wait_for_lease=False,
                )
            ],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_port="0", target_type="serial")],
            # The provider's default is SPICE, which QEMU builds without SPICE refuse; VNC is in
            # every build, and listens nowhere (the serial console is the way in).
            graphics=libvirt.DomainGraphicsArgs(type="vnc", listen_type="none", autoport=True),
            opts=pulumi.ResourceOptions(
                parent=self,
                replace_on_changes=list(DOMAIN_REPLACE_ON_CHANGES),
                delete_before_replace=True,
                depends_on=args.replace_after,
            ),
        )
        self.register_outputs({"domain_name": self.domain_name, "address": str(node.address)})
