"""The lab's libvirt host: libvirtd and virtlogd in a namespace node of their own (network, PID
and mount namespaces, halab/drivers/netns/node.py), so the network's bridge, its NAT rules, dnsmasq, the
taps and the guests' QEMU processes all live there, and `/etc/libvirt`, `/var/lib/libvirt` and
`/run` are the node's own (copy-on-write, in memory): nothing of libvirt is added to the host,
and destroying the node removes every guest, volume and network at once.

The node also plays the outside client: addresses beyond the lab subnet on its loopback (the
hypervisor's own LAN addresses, in a real set-up), so requests reach the VIP through the lab's
gateway as a user's would.
"""

from __future__ import annotations

from ipaddress import ip_network

from halab.drivers.netns import topology
from halab.drivers.netns.node import NsNode, destroy_netns

POOL_PATH = "/var/lib/libvirt/images"
DAEMONS = ("virtlogd", "libvirtd")


class HypervisorError(RuntimeError):
    pass


def netns_name(prefix: str) -> str:
    return f"{prefix}-_hv"


class Hypervisor:
    def __init__(self, node: NsNode):
        self.node = node

    @property
    def netns(self) -> str:
        return self.node.netns

    @classmethod
    def attach(cls, prefix: str) -> Hypervisor | None:
        node = NsNode.attach(netns_name(prefix))
        return cls(node) if node else None

    @classmethod
    def start(cls, prefix: str) -> Hypervisor:
        """A new node with libvirtd and a `default` pool; raises (and leaves nothing) on failure."""
        node = NsNode.create(netns_name(prefix), hostname="hypervisor")
        try:
            hv = cls(node)
            hv.run(
                f"mkdir -p /var/log/libvirt/qemu /run/libvirt {POOL_PATH} && virtlogd -d && libvirtd -d && "
                "for i in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && exit 0; sleep 0.2; done; "
                "echo 'libvirtd did not answer' >&2; exit 1"
            )
            hv.run(
                f"virsh -q -c qemu:///system pool-define-as default dir --target {POOL_PATH} >/dev/null"
                " && virsh -q -c qemu:///system pool-start default >/dev/null"
            )
            # the namespace lab's outside client addresses: one convention for both labs
            for a in topology.client_addresses(ip_network(topology.DEFAULT_CLIENT_CIDR)):
                hv.run(["ip", "addr", "add", f"{a}/32", "dev", "lo"])
            return hv
        except BaseException:
            destroy_netns(node.netns)
            raise

    def run(self, cmd: list[str] | str, *, input: str | None = None, check: bool = True, timeout: float = 600):
        p = self.node.run(cmd, input=input, check=False, timeout=timeout)
        if check and p.returncode != 0:
            shown = cmd if isinstance(cmd, str) else " ".join(cmd)
            raise HypervisorError(f"{shown[:200]}: exit {p.returncode}: {p.stderr.strip()[-2000:]}")
        return p

    def net_argv(self, argv: list[str]) -> list[str]:
        """A command of this machine's filesystem run in the hypervisor's network namespace only:
        ssh to the guests, the verifier's client side."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]

    def console_log(self, domain: str, lines: int = 60) -> str:
        p = self.run(f"tail -n {lines} /var/log/libvirt/qemu/{domain}-console.log", check=False)
        return p.stdout or p.stderr

    def daemons_running(self) -> bool:
        return all(self.run(["pgrep", "-x", d], check=False).returncode == 0 for d in DAEMONS)


def destroy(prefix: str) -> bool:
    """Everything of the lab's libvirt host: guests, volumes, networks, daemons, mounts."""
    return destroy_netns(netns_name(prefix))
