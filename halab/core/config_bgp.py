"""The topology keys of the stack config: `halab:mode` and, in ecmp mode, `halab:bgp` (and the
secret `halab:bgpPassword`). Each combination that cannot work is one problem naming its key:
a VRRP key in ecmp mode, a BGP key in active-standby mode, a VIP inside the LAN in ecmp mode.

Why a routed VIP must be outside the lab subnet in ecmp mode: no node answers ARP for it (each
load balancer has it on its loopback), so a host on the LAN that took it for a neighbour would
get no answer. The router reaches it by the /32 routes the load balancers announce.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

from halab.core.config_rules import NS, Problems, address, in_subnet, integer, keys, merge
from halab.core.model import Bfd, Bgp, Network, Node

MODES = ("active-standby", "ecmp")

# ecmp mode's defaults, merged key by key under `halab:bgp`: two private ASNs (RFC 6996), the
# router at the lab network's gateway (its hypervisor, or a bridged LAN's router), and BFD at
# 300 ms x 3 (FRR's own default; a lab stack may ask for 100 ms).
BFD_DEFAULTS: dict[str, Any] = {"intervalMs": 300, "multiplier": 3}
BGP_DEFAULTS: dict[str, Any] = {"asn": 65010, "peerAsn": 65000, "peer": None, "bfd": BFD_DEFAULTS}

# keys of active-standby mode alone: VRRP's section and secret
VRRP_ONLY = ("vrrp", "vrrpAuthPass")
ECMP_ONLY = ("bgp", "bgpPassword")


def parse_mode(p: Problems, value: Any) -> str:
    if value not in MODES:
        p.add("mode", value, f"must be {' or '.join(MODES)}")
        return "active-standby"
    return str(value)


def check_mode_keys(p: Problems, mode: str, given: Mapping[str, Any], lbs: tuple[Node, ...]) -> None:
    """The keys that the other mode alone reads: one problem each, rather than a key silently
    ignored (a user who sets vrrp.advertInterval in ecmp mode expects it to do something)."""
    if mode == "ecmp":
        for key in VRRP_ONLY:
            if key in given:
                shown = "<secret>" if key == "vrrpAuthPass" else given[key]
                p.add(key, shown, f"is for {NS}:mode: active-standby; ecmp mode has no VRRP: drop it")
        for n in lbs:
            if n.priority is not None:
                p.add(
                    f"loadBalancers[{n.name}].priority",
                    n.priority,
                    "is a VRRP priority; in ecmp mode every load balancer carries a share: drop it",
                )
    else:
        for key in ECMP_ONLY:
            if key in given:
                shown = "<secret>" if key == "bgpPassword" else given[key]
                p.add(key, shown, f"is for {NS}:mode: ecmp; active-standby has no BGP: drop it or set {NS}:mode: ecmp")


def check_routed_vip(p: Problems, vip: IPv4Address | None, net: Network | None, taken: dict) -> None:
    """ecmp mode's VIP: outside the lab subnet (see the module's docstring), and no node's."""
    if vip is None or net is None:
        return
    if vip in net.cidr:
        p.add(
            "vip",
            str(vip),
            f"is inside {NS}:network.cidr {net.cidr}: in ecmp mode the VIP is routed, and no node answers "
            "ARP for it; take an address outside the lab subnet",
        )
    if vip in taken:
        p.add("vip", str(vip), f"is already used by {taken[vip]}")
    taken[vip] = f"{NS}:vip"


def _asn(p: Problems, key: str, value: Any) -> int | None:
    asn = integer(p, key, value, 1, 4294967294)
    if asn == 23456:
        p.add(key, asn, "is AS_TRANS (RFC 6793), which no BGP speaker may use as its own")
        return None
    return asn


def parse_bgp(p: Problems, obj: Any, net: Network | None, taken: dict) -> Bgp | None:
    o = keys(p, "bgp", obj, set(BGP_DEFAULTS))
    asn = _asn(p, "bgp.asn", o.get("asn"))
    peer_asn = _asn(p, "bgp.peerAsn", o.get("peerAsn"))
    if asn is not None and asn == peer_asn:
        p.add(
            "bgp.peerAsn",
            peer_asn,
            f"equals {NS}:bgp.asn: the load balancers peer with the router over eBGP (iBGP would need "
            "the router to reflect and to take multipath over iBGP)",
        )
    peer = net.gateway if net is not None else None
    if o.get("peer") is not None:
        peer = address(p, "bgp.peer", o["peer"])
        if peer is not None and net is not None and peer != net.gateway:
            in_subnet(p, "bgp.peer", peer, net, taken)
        elif peer is not None and net is None:
            peer = None
    bfd = _bfd(p, o.get("bfd"))
    if asn is None or peer_asn is None or asn == peer_asn or peer is None or bfd is False:
        return None
    return Bgp(asn=asn, peer=peer, peer_asn=peer_asn, bfd=bfd or None)


def _bfd(p: Problems, obj: Any) -> Bfd | None | bool:
    """Bfd, None when turned off (`bfd: false`: BGP's hold timer alone, 9 s), False when bad."""
    if obj is False:
        return None
    o = keys(p, "bgp.bfd", merge(BFD_DEFAULTS, obj), set(BFD_DEFAULTS))
    if not o:
        return False
    # FRR's bfdd accepts 10-60000 ms and a multiplier of 2-255 (bfdd/bfdd_cli.c)
    interval = integer(p, "bgp.bfd.intervalMs", o.get("intervalMs"), 10, 60000)
    mult = integer(p, "bgp.bfd.multiplier", o.get("multiplier"), 2, 255)
    if interval is None or mult is None:
        return False
    return Bfd(interval, mult)


def check_bgp_password(p: Problems, secrets: Mapping[str, str]) -> None:
    pw = secrets.get("bgpPassword")
    # FRR's `neighbor PEER password` takes one word of at most 80 characters (bgpd/bgp_vty.c)
    if pw is not None and (not 1 <= len(pw) <= 80 or not pw.isprintable() or " " in pw):
        p.add("bgpPassword", "<secret>", f"must be 1-80 printable characters without spaces (it has {len(pw)})")
