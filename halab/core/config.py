"""Stack config (the `halab:` namespace of Pulumi.<stack>.yaml) -> validated `Lab` model.

`parse` is a pure function. It collects every problem before failing, so a user fixes a
stack file in one pass, and each problem names the key and the bad value. Secrets
(`halab:vrrpAuthPass`, `halab:sshPrivateKey`) never enter the model: the stack file holds
them encrypted, and only the driver that needs them (Pulumi) reads them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any
from urllib.parse import urlparse

from halab.core.config_bgp import (
    BGP_DEFAULTS,
    check_bgp_password,
    check_mode_keys,
    check_routed_vip,
    parse_bgp,
    parse_mode,
)
from halab.core.config_rules import (
    DURATION_RE,
    IFACE_RE,
    NAME_RE,
    NS,
    SECRET_KEYS,
    ConfigError,
    Problems,
    address,
    boolean,
    in_subnet,
    integer,
    keys,
    merge,
    string,
)
from halab.core.config_services import parse_services
from halab.core.model import (
    HaproxyOptions,
    HealthCheck,
    Hypervisor,
    Lab,
    Libvirt,
    Network,
    Node,
    Service,
    Ssh,
    VmSize,
    VmSizes,
    Vrrp,
)
from halab.core.stackfile import is_secure

# The default guest: Debian 13's generic cloud image, a dated build and its sha512 from that build's
# SHA512SUMS (the same digest in Debian's build manifest, as lima-vm/lima's templates/_images/
# debian-13.yaml copies it). The VM lab boots its own build of the same release and packages
# (halab/drivers/vmlab/image.py), so every step, unit and drill is proven on what this image runs;
# the image itself is not booted here, nor is Ubuntu 24.04, which works by the same steps
# (docs/config.md, `image`; docs/real-pulumi-up.md).
DEBIAN_13_BUILD = "20260712-2537"
DEBIAN_13_IMAGE = f"https://cloud.debian.org/images/cloud/trixie/{DEBIAN_13_BUILD}/debian-13-genericcloud-amd64-{DEBIAN_13_BUILD}.qcow2"
DEBIAN_13_CHECKSUM = (
    "sha512:7ae53e9dbee282bfc16f289dec483dde3a8598769c38a267948310f7a2a52c66"
    "2620198603bc52c142627efba379863d16079698a10b34102d55bcedd40e8d32"
)
CHECKSUM_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")

# Every default in one place. Together they reproduce the seed article's lab (with its
# 192.169/192.168 typo resolved to 192.168.69.0/24).
DEFAULTS: dict[str, Any] = {
    "libvirtUri": "qemu:///system",
    "libvirtHosts": None,  # {name: URI} to spread nodes over several hypervisors
    "domainType": "kvm",
    "pool": "default",
    "image": DEBIAN_13_IMAGE,
    "imageChecksum": None,  # the default image's DEBIAN_13_CHECKSUM; required for another URL
    "network": {"name": "halab", "cidr": "192.168.69.0/24", "mode": "nat", "interface": "eth0"},
    "vip": "192.168.69.110",
    "loadBalancers": [
        {"name": "lb1", "address": "192.168.69.111"},
        {"name": "lb2", "address": "192.168.69.112"},
    ],
    "backends": [
        {"name": "www1", "address": "192.168.69.106"},
        {"name": "www2", "address": "192.168.69.107"},
    ],
    "services": [
        {"name": "http", "port": 80},
        {"name": "https", "port": 443},
    ],
    "service": {"balance": "leastconn", "sticky": True, "stickyExpire": "30m"},
    "healthCheck": {"interval": "2s", "rise": 2, "fall": 3},
    "haproxy": {"peersPort": 10000, "statsPort": 8404, "statsUser": "admin"},
    "vrrp": {
        "routerId": 100,
        "advertInterval": 1,
        "version": 2,
        "mode": "unicast",
        "preempt": True,
        "haproxyCheck": "watch",
        "handoffDrainSeconds": 300,
    },
    "vm": {"vcpu": 1, "memoryMiB": 1024, "diskGiB": 10},
    "ssh": {"user": "halab"},
    "testClients": None,  # None: the hypervisor's own address on the lab network
    "mode": "active-standby",  # or ecmp: every load balancer announces the VIP by BGP (config_bgp.py)
    "bgp": BGP_DEFAULTS,  # ecmp mode only
}

# Derived VRRP priorities: the first load balancer is the preferred master.
PRIORITY_FIRST, PRIORITY_STEP = 150, 10

TOP_KEYS = frozenset(DEFAULTS) | frozenset(SECRET_KEYS)


def parse(raw: Mapping[str, Any], *, secrets: Mapping[str, str] | None = None) -> Lab:
    """Validates the `config:` mapping of a stack file and returns the lab model.

    Keys of other namespaces (`libvirt:uri`, `pulumi:...`) are ignored. A driver that needs
    the secrets (Pulumi) passes their decrypted values as `secrets`: they are then required
    and checked too, and their problems are reported without their values.
    """
    p = Problems()
    given: dict[str, Any] = {}
    for full_key, value in raw.items():
        ns, _, key = str(full_key).partition(":")
        if ns != NS or not key:
            continue
        if key not in TOP_KEYS:
            p.add(key, value, f"is not a known key (known: {', '.join(sorted(TOP_KEYS))})")
            continue
        given[key] = value
    cfg = {k: merge(v, given[k]) if k in given else v for k, v in DEFAULTS.items()}

    for key in SECRET_KEYS:
        if key in given and not is_secure(given[key]):
            p.add(key, "<plain text>", f"must be stored encrypted: pulumi config set --secret {NS}:{key} ...")
    mode = parse_mode(p, cfg["mode"])
    if secrets is not None:
        vrrp_cfg = cfg["vrrp"] if isinstance(cfg["vrrp"], Mapping) else {}
        haproxy_cfg = cfg["haproxy"] if isinstance(cfg["haproxy"], Mapping) else {}
        _check_secrets(
            p,
            secrets,
            needs_auth=mode == "active-standby" and vrrp_cfg.get("version") != 3,
            needs_stats=haproxy_cfg.get("statsPort") != 0,
        )
        check_bgp_password(p, secrets)

    libvirt = _libvirt(p, cfg, given)
    network = _network(p, cfg["network"])
    taken: dict[IPv4Address, str] = {}
    vip = address(p, "vip", cfg["vip"])
    if mode == "ecmp":
        check_routed_vip(p, vip, network, taken)
    else:
        in_subnet(p, "vip", vip, network, taken)
    names: dict[str, str] = {}
    lbs = _nodes(p, "loadBalancers", cfg["loadBalancers"], "lb", 2, network, taken, names)
    backends = _nodes(p, "backends", cfg["backends"], "backend", 1, network, taken, names)
    check_mode_keys(p, mode, given, lbs)
    lbs = _priorities(p, lbs) if mode == "active-standby" else lbs
    bgp = parse_bgp(p, cfg["bgp"], network, taken) if mode == "ecmp" else None
    services = parse_services(p, cfg["services"], cfg["service"], tuple(b.name for b in backends))
    health = _health(p, cfg["healthCheck"])
    haproxy = _haproxy(p, cfg["haproxy"], services)
    vrrp = _vrrp(p, cfg["vrrp"])
    vm = _vm(p, cfg["vm"])
    ssh = _ssh(p, cfg["ssh"], given)
    clients = _test_clients(p, cfg["testClients"], network, taken)

    _placement(p, libvirt, network, lbs, backends)
    if p.items:
        raise ConfigError(p.items)
    assert network is not None and vip is not None and vrrp is not None and health is not None
    return Lab(
        libvirt=libvirt,
        network=network,
        vip=vip,
        load_balancers=lbs,
        backends=backends,
        services=services,
        health_check=health,
        haproxy=haproxy,
        vrrp=vrrp,
        vm=vm,
        ssh=ssh,
        mode=mode,  # type: ignore[arg-type]
        bgp=bgp,
        # default: the hypervisor, on its own libvirt network; a bridged LAN's router is no client
        test_clients=clients if clients is not None else (() if network.mode == "bridge" else (network.gateway,)),
    )


def _placement(p: Problems, libvirt: Libvirt, net: Network | None, lbs: tuple[Node, ...], backends: tuple[Node, ...]):
    """Every node on a known hypervisor; spread over several: a bridged network and load
    balancers on distinct hosts (two on one hypervisor is not HA)."""
    names = [h.name for h in libvirt.hypervisors]
    if not names:
        return
    for key, nodes in (("loadBalancers", lbs), ("backends", backends)):
        for n in nodes:
            if n.hypervisor == "default" and names != ["default"]:
                p.add(
                    f"{key}[{n.name}].hypervisor",
                    None,
                    f"is required with {NS}:libvirtHosts (one of {', '.join(names)})",
                )
            elif n.hypervisor not in names:
                p.add(
                    f"{key}[{n.name}].hypervisor",
                    n.hypervisor,
                    f"is not a hypervisor of {NS}:libvirtHosts ({', '.join(names)})",
                )
    used = {n.hypervisor for n in lbs + backends}
    if len(used) > 1 and net is not None and net.mode != "bridge":
        p.add(
            "network.mode", net.mode, "must be bridge when nodes span hypervisors (a libvirt NAT network is per host)"
        )
    if len(names) > 1:
        lb_hosts = [n.hypervisor for n in lbs]
        if len(set(lb_hosts)) < min(len(lbs), len(names)):
            shared = sorted({h for h in lb_hosts if lb_hosts.count(h) > 1})
            p.add(
                "loadBalancers",
                [f"{n.name}@{n.hypervisor}" for n in lbs],
                f"share hypervisor(s) {', '.join(shared)} while another has none: one host down would take both",
            )


def _check_secrets(p: Problems, secrets: Mapping[str, str], needs_auth: bool, needs_stats: bool) -> None:
    stats = secrets.get("statsPassword")
    if needs_stats and stats is None:
        p.add(
            "statsPassword",
            None,
            f"is required for the stats page: pulumi config set --secret {NS}:statsPassword ... "
            f"(scripts/setup does it), or {NS}:haproxy.statsPort: 0",
        )
    elif stats is not None and (len(stats) < 12 or not stats.isprintable() or '"' in stats):
        p.add(
            "statsPassword", "<secret>", f"must be 12 or more printable characters without quotes (it has {len(stats)})"
        )
    auth = secrets.get("vrrpAuthPass")
    if auth is None and not needs_auth:
        return  # VRRPv3 has no authentication
    if auth is None:
        p.add(
            "vrrpAuthPass",
            None,
            f"is required: pulumi config set --secret {NS}:vrrpAuthPass <1-8 characters> (scripts/setup does it)",
        )
    elif not 1 <= len(auth) <= 8 or not auth.isprintable() or " " in auth:
        # keepalived's PASS authentication keeps only the first 8 characters.
        p.add("vrrpAuthPass", "<secret>", f"must be 1-8 printable characters without spaces (it has {len(auth)})")


def _hypervisor(p: Problems, key: str, name: str, uri: Any) -> Hypervisor:
    uri = string(p, key, uri)
    jump = None
    if uri:
        u = urlparse(uri)
        # terraform-provider-libvirt 0.8.1 always talks to libvirt's system daemon (qemu:///session
        # would silently be another libvirt), and over SSH it logs in as the URI's user only (an
        # empty one fails; pulumi-command's jump would log in as root).
        if u.scheme not in ("qemu", "qemu+ssh") or u.path != "/system":
            p.add(
                key, uri, "must be qemu:///system or qemu+ssh://user@host/system (the provider uses the system daemon)"
            )
        elif u.scheme == "qemu+ssh":
            if not u.hostname:
                p.add(key, uri, "names no host")
            elif not u.username:
                p.add(
                    key, uri, "names no SSH user: qemu+ssh://USER@host/system (the provider and the jump log in as it)"
                )
            elif u.port is not None:
                # v0.8.1 dials "[host:PORT]:PORT" for a URI with a port and fails (upstream
                # #1116, libvirt/uri/ssh.go; fixed in v0.8.2, which no pulumi-libvirt bundles)
                p.add(
                    key,
                    uri,
                    f"names SSH port {u.port}, which terraform-provider-libvirt v0.8.1 (pulumi-libvirt 0.5.4, "
                    "the last release) cannot dial (upstream #1116): serve SSH on port 22 of the libvirt host, "
                    f"or give qemu+ssh://{u.username}@HOST/system a host whose port 22 forwards to it",
                )
            else:
                jump = f"{u.username}@{u.hostname}:22"
    return Hypervisor(name=name, uri=uri, jump_host=jump)


def _libvirt(p: Problems, cfg: dict[str, Any], given: Mapping[str, Any]) -> Libvirt:
    hosts = cfg["libvirtHosts"]
    if hosts is None:
        hypervisors = (_hypervisor(p, "libvirtUri", "default", cfg["libvirtUri"]),)
    elif not isinstance(hosts, Mapping) or not hosts:
        p.add("libvirtHosts", hosts, "must map hypervisor names to libvirt URIs")
        hypervisors = ()
    else:
        if "libvirtUri" in given:
            p.add("libvirtUri", given["libvirtUri"], f"conflicts with {NS}:libvirtHosts: name the URIs there only")
        found = []
        for name, uri in hosts.items():
            if NAME_RE.match(str(name)):
                found.append(_hypervisor(p, f"libvirtHosts.{name}", str(name), uri))
            else:
                p.add(f"libvirtHosts.{name}", uri, "has an invalid hypervisor name")
        hypervisors = tuple(found)
        uris = [h.uri for h in hypervisors]
        if len(set(uris)) != len(uris):
            p.add("libvirtHosts", hosts, "names one URI twice")
    dtype = cfg["domainType"]
    if dtype not in ("kvm", "qemu"):
        p.add("domainType", dtype, "must be kvm or qemu (qemu: no hardware virtualisation, slow)")
    image = string(p, "image", cfg["image"])
    remote = image.startswith(("http://", "https://"))
    if image and not (remote or image.startswith("/")):
        p.add("image", image, "must be an http(s) URL or an absolute path on the machine running pulumi")
    checksum = cfg["imageChecksum"]
    if checksum is None and image == DEBIAN_13_IMAGE:
        checksum = DEBIAN_13_CHECKSUM
    if checksum is not None and not (isinstance(checksum, str) and CHECKSUM_RE.fullmatch(checksum)):
        p.add("imageChecksum", checksum, "must be sha512:<128 hex digits> or sha256:<64 hex digits>, lower case")
    elif checksum is None and remote:
        p.add(
            "image",
            image,
            f"needs {NS}:imageChecksum (sha512:HEX or sha256:HEX, from the SHA512SUMS or SHA256SUMS published "
            "beside it): an image from the network is used only once its bytes are checked",
        )
    pool = string(p, "pool", cfg["pool"], NAME_RE, "libvirt pool name")
    return Libvirt(hypervisors=hypervisors, domain_type=dtype, pool=pool, image=image, image_checksum=checksum)


def _network(p: Problems, obj: Any) -> Network | None:
    o = keys(p, "network", obj, {"name", "cidr", "mode", "interface", "bridge", "gateway"})
    if not o:
        return None
    name = string(p, "network.name", o.get("name"), NAME_RE, "network name")
    mode = o.get("mode")
    if mode not in ("nat", "route", "bridge"):
        p.add("network.mode", mode, "must be nat, route (a libvirt network) or bridge (an existing host bridge)")
    bridge = o.get("bridge")
    if mode == "bridge":
        bridge = string(p, "network.bridge", bridge, IFACE_RE, "bridge name")
        if "gateway" not in o:
            p.add("network.gateway", None, "is required in bridge mode: the router of the bridged LAN")
    elif bridge is not None:
        p.add("network.bridge", bridge, "needs network.mode: bridge")
    iface = string(p, "network.interface", o.get("interface"), IFACE_RE, "interface name")
    cidr = o.get("cidr")
    try:
        net = ip_network(str(cidr), strict=True) if isinstance(cidr, str) else None
    except ValueError:
        net = None
    if not isinstance(net, IPv4Network):
        p.add("network.cidr", cidr, "is not an IPv4 network in CIDR form (host bits must be zero)")
        return None
    if net.prefixlen > 29:
        p.add("network.cidr", cidr, "is too small: the lab needs at least a /29")
        return None
    gateway = net.network_address + 1
    if "gateway" in o:
        gw = address(p, "network.gateway", o["gateway"])
        if gw is not None and (gw not in net or gw in (net.network_address, net.broadcast_address)):
            p.add("network.gateway", str(gw), f"is not a host address of {net}")
        elif gw is not None:
            gateway = gw
        if mode != "bridge":
            p.add("network.gateway", o["gateway"], "is the hypervisor's first address in nat and route modes: drop it")
    return Network(name=name, cidr=net, gateway=gateway, mode=mode, interface=iface, bridge=bridge)


def _nodes(
    p: Problems,
    key: str,
    obj: Any,
    role: str,
    minimum: int,
    net: Network | None,
    taken: dict,
    names: dict[str, str],
) -> tuple[Node, ...]:
    if not isinstance(obj, list):
        p.add(key, obj, "must be a list")
        return ()
    if len(obj) < minimum:
        p.add(key, obj, f"needs at least {minimum} entr{'ies' if minimum > 1 else 'y'}")
    allowed = {"name", "address", "priority", "hypervisor"} if role == "lb" else {"name", "address", "hypervisor"}
    out = []
    for i, item in enumerate(obj):
        k = f"{key}[{i}]"
        o = keys(p, k, item, allowed)
        name = string(p, f"{k}.name", o.get("name"), NAME_RE, "host name (a-z, 0-9, -; 31 at most)")
        duplicate = name in names
        if duplicate:
            p.add(f"{k}.name", name, f"is already used by {names[name]}")
        elif name:
            names[name] = f"{NS}:{k}"
        addr = address(p, f"{k}.address", o.get("address"))
        in_subnet(p, f"{k}.address", addr, net, taken)
        prio = o.get("priority")
        if prio is not None:
            prio = integer(p, f"{k}.priority", prio, 1, 254)
        hv = o.get("hypervisor", "default")
        if addr is not None and name and not duplicate:
            out.append(Node(name=name, address=addr, role=role, priority=prio, hypervisor=str(hv)))  # type: ignore[arg-type]
    return tuple(out)


def _priorities(p: Problems, lbs: tuple[Node, ...]) -> tuple[Node, ...]:
    """Fills priorities from order (first = preferred master); equal priorities are an error."""
    out = []
    for i, n in enumerate(lbs):
        prio = n.priority if n.priority is not None else max(1, PRIORITY_FIRST - PRIORITY_STEP * i)
        out.append(dataclasses.replace(n, priority=prio))
    seen: dict[int, str] = {}
    for n in out:
        if n.priority in seen:
            p.add(
                f"loadBalancers[{n.name}].priority",
                n.priority,
                f"equals the priority of {seen[n.priority]} (derived ones are {PRIORITY_FIRST}, "
                f"{PRIORITY_FIRST - PRIORITY_STEP}, ... in list order): VRRP would elect by address, not by intent",
            )
        seen.setdefault(n.priority, n.name)  # type: ignore[arg-type]
    return tuple(out)


def _haproxy(p: Problems, obj: Any, services: tuple[Service, ...]) -> HaproxyOptions:
    o = keys(p, "haproxy", obj, {"peersPort", "statsPort", "statsUser"})
    peers = integer(p, "haproxy.peersPort", o.get("peersPort"), 1, 65535) or 10000
    stats = integer(p, "haproxy.statsPort", o.get("statsPort"), 0, 65535)
    user = string(p, "haproxy.statsUser", o.get("statsUser"), re.compile(r"^[a-z][a-z0-9_-]{0,31}$"), "user name")
    used = {s.port: f"{NS}:services[{s.name}].port" for s in services}
    for key, port in (("haproxy.peersPort", peers), ("haproxy.statsPort", stats)):
        if port in used:
            p.add(key, port, f"is already used by {used[port]}")
        elif port:
            used[port] = f"{NS}:{key}"
    return HaproxyOptions(peers, stats or 0, user)


def _health(p: Problems, obj: Any) -> HealthCheck | None:
    o = keys(p, "healthCheck", obj, {"interval", "rise", "fall"})
    interval = string(p, "healthCheck.interval", o.get("interval"), DURATION_RE, "duration (e.g. 2s, 500ms)")
    rise = integer(p, "healthCheck.rise", o.get("rise"), 1, 100)
    fall = integer(p, "healthCheck.fall", o.get("fall"), 1, 100)
    return HealthCheck(interval, rise, fall) if rise and fall else None


def _vrrp(p: Problems, obj: Any) -> Vrrp | None:
    allowed = {"routerId", "advertInterval", "version", "mode", "preempt", "haproxyCheck", "handoffDrainSeconds"}
    o = keys(p, "vrrp", obj, allowed)
    rid = integer(p, "vrrp.routerId", o.get("routerId"), 1, 255)
    version = o.get("version")
    if version not in (2, 3):
        p.add("vrrp.version", version, "must be 2 (with PASS authentication) or 3 (sub-second adverts)")
    mode = o.get("mode")
    if mode not in ("unicast", "multicast"):
        p.add("vrrp.mode", mode, "must be unicast (adverts to the peers only) or multicast")
    preempt = boolean(p, "vrrp.preempt", o.get("preempt"))
    drain = integer(p, "vrrp.handoffDrainSeconds", o.get("handoffDrainSeconds"), 0, 3600)
    check = o.get("haproxyCheck")
    if check not in ("watch", "process-name"):
        p.add("vrrp.haproxyCheck", check, "must be watch, or process-name (the seed's check, for comparison)")
    adv = o.get("advertInterval")
    ok_adv = None
    if isinstance(adv, bool) or not isinstance(adv, int | float):
        p.add("vrrp.advertInterval", adv, "must be a number of seconds")
    elif version == 3:
        if not 0.01 <= adv <= 40.95 or abs(adv * 100 - round(adv * 100)) > 1e-9:
            p.add("vrrp.advertInterval", adv, "must be 0.01-40.95 seconds in hundredths with VRRPv3")
        else:
            ok_adv = float(adv)
    elif not float(adv).is_integer() or not 1 <= adv <= 255:
        p.add("vrrp.advertInterval", adv, "must be whole seconds 1-255 with VRRPv2 (vrrp.version: 3 for sub-second)")
    else:
        ok_adv = float(adv)
    if rid and ok_adv and drain is not None and version in (2, 3) and mode in ("unicast", "multicast"):
        return Vrrp(rid, ok_adv, version, mode == "unicast", preempt, check, handoff_drain_seconds=drain)
    return None


# a VM's size, key by key: its field in VmSize and its range
VM_LIMITS = {"vcpu": ("vcpu", 1, 64), "memoryMiB": ("memory_mib", 512, 262144), "diskGiB": ("disk_gib", 4, 2048)}


def _vm_size(p: Problems, key: str, o: Mapping[str, Any], base: VmSize) -> VmSize:
    """`base` with the keys `o` gives, each checked (a bad one keeps base's value, reported)."""
    fields = {
        field: integer(p, f"{key}.{k}", o[k], lo, hi) or getattr(base, field)
        for k, (field, lo, hi) in VM_LIMITS.items()
        if k in o
    }
    return dataclasses.replace(base, **fields)


def _vm(p: Problems, obj: Any) -> VmSizes:
    """`vm`, then each role's overrides on top of it: a role gives only what differs."""
    o = keys(p, "vm", obj, {*VM_LIMITS, "loadBalancers", "backends"})
    fallback = VmSize(**{field: DEFAULTS["vm"][k] for k, (field, _, _) in VM_LIMITS.items()})
    default = _vm_size(p, "vm", o, fallback)

    def role(key: str) -> VmSize:
        return _vm_size(p, f"vm.{key}", keys(p, f"vm.{key}", o.get(key, {}), set(VM_LIMITS)), default)

    return VmSizes(load_balancer=role("loadBalancers"), backend=role("backends"))


def _ssh(p: Problems, obj: Any, given: Mapping[str, Any]) -> Ssh:
    o = keys(p, "ssh", obj, {"user", "publicKey"})
    user = string(p, "ssh.user", o.get("user"), re.compile(r"^[a-z_][a-z0-9_-]{0,31}$"), "user name")
    if user == "root":
        p.add("ssh.user", user, "must not be root (cloud-init gives the user passwordless sudo)")
    pub = o.get("publicKey")
    if pub is not None:
        if not isinstance(pub, str) or not pub.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
            p.add("ssh.publicKey", pub, "is not an OpenSSH public key")
        if "sshPrivateKey" not in given:
            p.add("ssh.publicKey", pub, f"needs its private key in {NS}:sshPrivateKey (a secret)")
    elif "sshPrivateKey" in given:
        p.add("sshPrivateKey", "<secret>", f"needs its public key in {NS}:ssh.publicKey")
    return Ssh(user=user, public_key=pub)


def _test_clients(p: Problems, obj: Any, net: Network | None, taken: dict) -> tuple[IPv4Address, ...] | None:
    if obj is None:
        return None
    if not isinstance(obj, list):
        p.add("testClients", obj, "must be a list of addresses on the lab subnet")
        return None
    out = []
    for i, item in enumerate(obj):
        a = address(p, f"testClients[{i}]", item)
        if a is None or net is None:
            continue
        if a not in net.cidr:
            why = f"is outside {NS}:network.cidr {net.cidr} (only on-subnet clients need a return route)"
            p.add(f"testClients[{i}]", item, why)
        elif a in taken:
            p.add(f"testClients[{i}]", item, f"is already used by {taken[a]}")
        else:
            out.append(a)
    return tuple(out)
