"""Where every namespace-lab node sits: derived from the lab model alone, so `up`, `verify` and
`down` (even after a failed `up`, in another process) agree on every name and address.

    client (outside subnet) --- router --- switch (bridge) --- LBs, backends, LAN client
                                  ^ the lab gateway: the hypervisor's place on the VM path
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network

from halab.core.model import Lab, Node

# Documentation range (RFC 5737, TEST-NET-2): never routed, and it only exists inside the lab.
DEFAULT_CLIENT_CIDR = "198.51.100.0/24"
SPREAD_ADDRESSES = 12  # extra source addresses of the outside client, to show balancing


@dataclass(frozen=True)
class LabHost:
    name: str  # logical name: a node of the model, or _router, _client, _lan, _switch
    netns: str
    role: str  # lb, backend, router, client, lan-client, switch
    address: IPv4Address | None  # on the lab subnet (None for the switch and the outside client)
    node: Node | None = None


@dataclass(frozen=True)
class Topology:
    lab: Lab
    prefix: str
    client_cidr: IPv4Network
    hosts: tuple[LabHost, ...]

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def by_role(self, role: str) -> tuple[LabHost, ...]:
        return tuple(h for h in self.hosts if h.role == role)

    @property
    def switch(self) -> LabHost:
        return self.host("_switch")

    @property
    def router(self) -> LabHost:
        return self.host("_router")

    @property
    def client(self) -> LabHost:
        return self.host("_client")

    @property
    def lan_client(self) -> LabHost:
        """An on-subnet test client: its own node, or the router (the hypervisor's address)."""
        lan = [h for h in self.hosts if h.role == "lan-client"]
        return lan[0] if lan else self.router

    @property
    def client_gateway(self) -> IPv4Address:
        return self.client_cidr.network_address + 1

    @property
    def client_addresses(self) -> tuple[IPv4Address, ...]:
        return client_addresses(self.client_cidr)

    @property
    def subnet_members(self) -> tuple[LabHost, ...]:
        return tuple(h for h in self.hosts if h.address is not None)


def client_addresses(cidr: IPv4Network) -> tuple[IPv4Address, ...]:
    """The outside client's addresses: its own, then the extra ones for spreading (the VM lab's
    hypervisor holds the same ones)."""
    return tuple(cidr.network_address + 10 + i for i in range(1 + SPREAD_ADDRESSES))


def build(lab: Lab, client_cidr: str = DEFAULT_CLIENT_CIDR) -> Topology:
    net = ip_network(client_cidr, strict=True)
    if net.overlaps(lab.network.cidr):
        raise ValueError(f"client subnet {net} overlaps the lab subnet {lab.network.cidr}")
    if net.num_addresses < 32:
        raise ValueError(f"client subnet {net} is too small: the lab needs a /27 at least")
    prefix = lab.network.name
    hosts = [
        LabHost("_switch", f"{prefix}-_switch", "switch", None),
        LabHost("_router", f"{prefix}-_router", "router", lab.network.gateway),
        LabHost("_client", f"{prefix}-_client", "client", None),
    ]
    # The seed's own test machine: an on-subnet client that is not the hypervisor.
    lan = [c for c in lab.test_clients if c != lab.network.gateway]
    if lan:
        hosts.append(LabHost("_lan", f"{prefix}-_lan", "lan-client", lan[0]))
    for n in lab.nodes:
        hosts.append(LabHost(n.name, f"{prefix}-{n.name}", n.role, n.address, n))
    return Topology(lab=lab, prefix=prefix, client_cidr=net, hosts=tuple(hosts))
