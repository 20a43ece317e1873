"""Stack config (the `halab:` namespace of Pulumi.<stack>.yaml) -> validated `Lab` model.

`parse` is a pure function. It collects every problem before failing, so a user fixes a
stack file in one pass, and each problem names the key and the bad value. Secrets
(`halab:vrrpAuthPass`, `halab:sshPrivateKey`) never enter the model: the stack file holds
them encrypted, and only the driver that needs them (Pulumi) reads them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlparse

from halab.model import (
    HaproxyOptions,
    HealthCheck,
    Hypervisor,
    Lab,
    Libvirt,
    Network,
    Node,
    Service,
    ServiceCheck,
    Ssh,
    VmSize,
    Vrrp,
)

NS = "halab"
SECRET_KEYS = ("vrrpAuthPass", "sshPrivateKey", "statsPassword")

UBUNTU_2404_IMAGE = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"

# Every default in one place. Together they reproduce the seed article's lab (with its
# 192.169/192.168 typo resolved to 192.168.69.0/24).
DEFAULTS: dict[str, Any] = {
    "libvirtUri": "qemu:///system",
    "libvirtHosts": None,  # {name: URI} to spread nodes over several hypervisors
    "domainType": "kvm",
    "pool": "default",
    "image": UBUNTU_2404_IMAGE,
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
    },
    "vm": {"vcpu": 1, "memoryMiB": 1024, "diskGiB": 10},
    "ssh": {"user": "halab"},
    "testClients": None,  # None: the hypervisor's own address on the lab network
}

# Derived VRRP priorities: the first load balancer is the preferred master.
PRIORITY_FIRST, PRIORITY_STEP = 150, 10

BALANCE_ALGORITHMS = ("roundrobin", "static-rr", "leastconn", "first", "source")
TRANSPARENCY = ("tproxy", "proxy-protocol", "forwarded-for")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
IFACE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")
DURATION_RE = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d)?$")
TOP_KEYS = frozenset(DEFAULTS) | frozenset(SECRET_KEYS)


class ConfigError(ValueError):
    """Every problem found in a stack config, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  - {p}" for p in problems))


class Secure:
    """Marks a config value that the stack file holds encrypted (`secure:`)."""

    def __repr__(self) -> str:
        return "<secret>"


def is_secure(value: Any) -> bool:
    return isinstance(value, Secure) or (isinstance(value, Mapping) and set(value) == {"secure"})


def from_pulumi(entries: Iterable[tuple[str, Any, bool]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The `parse` inputs from config as Pulumi hands it over, (key, value, is_secret) triples:
    the engine's in the program, `pulumi config --json --show-secrets` in the verifier. Returns
    (every `halab:` key, secret ones masked) and (the secret values). Structured values come as
    JSON text."""
    raw: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key, value, secret in entries:
        ns, _, name = key.partition(":")
        if ns != NS:
            continue
        if name in SECRET_KEYS and secret:
            raw[key] = Secure()
            secrets[name] = str(value)
        elif isinstance(value, str) and value[:1] in ("{", "["):
            try:
                raw[key] = json.loads(value)
            except ValueError:
                raw[key] = value
        else:
            raw[key] = value
    return raw, secrets


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, value: Any, why: str) -> None:
        self.items.append(f"{NS}:{key}: {value!r} {why}")


def _keys(p: _Problems, key: str, obj: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        p.add(key, obj, "must be a mapping")
        return {}
    for k in obj:
        if k not in allowed:
            p.add(f"{key}.{k}", obj[k], f"is not a known key (known: {', '.join(sorted(allowed))})")
    return obj


def _int(p: _Problems, key: str, value: Any, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        p.add(key, value, "must be an integer")
        return None
    if not lo <= value <= hi:
        p.add(key, value, f"is out of range {lo}-{hi}")
        return None
    return value


def _bool(p: _Problems, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        p.add(key, value, "must be true or false")
        return False
    return value


def _str(p: _Problems, key: str, value: Any, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str) or not value:
        p.add(key, value, "must be a non-empty string")
        return ""
    if pattern is not None and not pattern.match(value):
        p.add(key, value, f"is not a valid {what}")
    return value


def _addr(p: _Problems, key: str, value: Any) -> IPv4Address | None:
    try:
        a = ip_address(str(value)) if isinstance(value, str) else None
    except ValueError:
        a = None
    if not isinstance(a, IPv4Address):
        p.add(key, value, "is not an IPv4 address")
        return None
    return a


def _in_subnet(p: _Problems, key: str, a: IPv4Address | None, net: Network | None, taken: dict) -> None:
    """Checks an address can be a host on the lab network and is not already used."""
    if a is None or net is None:
        return
    if a not in net.cidr:
        p.add(key, str(a), f"is outside {NS}:network.cidr {net.cidr}")
    elif a == net.cidr.network_address:
        p.add(key, str(a), "is the network address of the lab subnet")
    elif a == net.cidr.broadcast_address:
        p.add(key, str(a), "is the broadcast address of the lab subnet")
    elif a == net.gateway:
        p.add(key, str(a), "is the gateway (the hypervisor's address on the lab network)")
    if a in taken:
        p.add(key, str(a), f"is already used by {taken[a]}")
    else:
        taken[a] = f"{NS}:{key}"


def _merge(defaults: Any, given: Any) -> Any:
    if isinstance(defaults, dict) and isinstance(given, Mapping):
        return {**defaults, **given}
    return given


def parse(raw: Mapping[str, Any], *, secrets: Mapping[str, str] | None = None) -> Lab:
    """Validates the `config:` mapping of a stack file and returns the lab model.

    Keys of other namespaces (`libvirt:uri`, `pulumi:...`) are ignored. A driver that needs
    the secrets (Pulumi) passes their decrypted values as `secrets`: they are then required
    and checked too, and their problems are reported without their values.
    """
    p = _Problems()
    given: dict[str, Any] = {}
    for full_key, value in raw.items():
        ns, _, key = str(full_key).partition(":")
        if ns != NS or not key:
            continue
        if key not in TOP_KEYS:
            p.add(key, value, f"is not a known key (known: {', '.join(sorted(TOP_KEYS))})")
            continue
        given[key] = value
    cfg = {k: _merge(v, given[k]) if k in given else v for k, v in DEFAULTS.items()}

    for key in SECRET_KEYS:
        if key in given and not is_secure(given[key]):
            p.add(key, "<plain text>", f"must be stored encrypted: pulumi config set --secret {NS}:{key} ...")
    if secrets is not None:
        vrrp_cfg = cfg["vrrp"] if isinstance(cfg["vrrp"], Mapping) else {}
        haproxy_cfg = cfg["haproxy"] if isinstance(cfg["haproxy"], Mapping) else {}
        _check_secrets(
            p, secrets, needs_auth=vrrp_cfg.get("version") != 3, needs_stats=haproxy_cfg.get("statsPort") != 0
        )

    libvirt = _libvirt(p, cfg, given)
    network = _network(p, cfg["network"])
    taken: dict[IPv4Address, str] = {}
    vip = _addr(p, "vip", cfg["vip"])
    _in_subnet(p, "vip", vip, network, taken)
    names: dict[str, str] = {}
    lbs = _nodes(p, "loadBalancers", cfg["loadBalancers"], "lb", 2, network, taken, names)
    backends = _nodes(p, "backends", cfg["backends"], "backend", 1, network, taken, names)
    lbs = _priorities(p, lbs)
    services = _services(p, cfg["services"], cfg["service"])
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
        # default: the hypervisor, on its own libvirt network; a bridged LAN's router is no client
        test_clients=clients if clients is not None else (() if network.mode == "bridge" else (network.gateway,)),
    )


def _placement(p: _Problems, libvirt: Libvirt, net: Network | None, lbs: tuple[Node, ...], backends: tuple[Node, ...]):
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


def _check_secrets(p: _Problems, secrets: Mapping[str, str], needs_auth: bool, needs_stats: bool) -> None:
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


def _hypervisor(p: _Problems, key: str, name: str, uri: Any) -> Hypervisor:
    uri = _str(p, key, uri)
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
            else:
                jump = f"{u.username}@{u.hostname}:{u.port or 22}"
    return Hypervisor(name=name, uri=uri, jump_host=jump)


def _libvirt(p: _Problems, cfg: dict[str, Any], given: Mapping[str, Any]) -> Libvirt:
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
    image = _str(p, "image", cfg["image"])
    if image and not (image.startswith(("http://", "https://")) or image.startswith("/")):
        p.add("image", image, "must be an http(s) URL or an absolute path on the machine running pulumi")
    pool = _str(p, "pool", cfg["pool"], NAME_RE, "libvirt pool name")
    return Libvirt(hypervisors=hypervisors, domain_type=dtype, pool=pool, image=image)


def _network(p: _Problems, obj: Any) -> Network | None:
    o = _keys(p, "network", obj, {"name", "cidr", "mode", "interface", "bridge", "gateway"})
    if not o:
        return None
    name = _str(p, "network.name", o.get("name"), NAME_RE, "network name")
    mode = o.get("mode")
    if mode not in ("nat", "route", "bridge"):
        p.add("network.mode", mode, "must be nat, route (a libvirt network) or bridge (an existing host bridge)")
    bridge = o.get("bridge")
    if mode == "bridge":
        bridge = _str(p, "network.bridge", bridge, IFACE_RE, "bridge name")
        if "gateway" not in o:
            p.add("network.gateway", None, "is required in bridge mode: the router of the bridged LAN")
    elif bridge is not None:
        p.add("network.bridge", bridge, "needs network.mode: bridge")
    iface = _str(p, "network.interface", o.get("interface"), IFACE_RE, "interface name")
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
        gw = _addr(p, "network.gateway", o["gateway"])
        if gw is not None and (gw not in net or gw in (net.network_address, net.broadcast_address)):
            p.add("network.gateway", str(gw), f"is not a host address of {net}")
        elif gw is not None:
            gateway = gw
        if mode != "bridge":
            p.add("network.gateway", o["gateway"], "is the hypervisor's first address in nat and route modes: drop it")
    return Network(name=name, cidr=net, gateway=gateway, mode=mode, interface=iface, bridge=bridge)


def _nodes(
    p: _Problems,
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
        o = _keys(p, k, item, allowed)
        name = _str(p, f"{k}.name", o.get("name"), NAME_RE, "host name (a-z, 0-9, -; 31 at most)")
        duplicate = name in names
        if duplicate:
            p.add(f"{k}.name", name, f"is already used by {names[name]}")
        elif name:
            names[name] = f"{NS}:{k}"
        addr = _addr(p, f"{k}.address", o.get("address"))
        _in_subnet(p, f"{k}.address", addr, net, taken)
        prio = o.get("priority")
        if prio is not None:
            prio = _int(p, f"{k}.priority", prio, 1, 254)
        hv = o.get("hypervisor", "default")
        if addr is not None and name and not duplicate:
            out.append(Node(name=name, address=addr, role=role, priority=prio, hypervisor=str(hv)))  # type: ignore[arg-type]
    return tuple(out)


def _priorities(p: _Problems, lbs: tuple[Node, ...]) -> tuple[Node, ...]:
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


def _services(p: _Problems, obj: Any, defaults: Any) -> tuple[Service, ...]:
    d = _keys(p, "service", defaults, {"balance", "sticky", "stickyExpire"})
    if not isinstance(obj, list) or not obj:
        p.add("services", obj, "must be a non-empty list")
        return ()
    out, names, ports = [], set(), set()
    for i, item in enumerate(obj):
        k = f"services[{i}]"
        o = _keys(
            p,
            k,
            item,
            {
                "name",
                "port",
                "backendPort",
                "balance",
                "sticky",
                "stickyExpire",
                "backendTls",
                "protocol",
                "transparency",
                "check",
            },
        )
        name = _str(p, f"{k}.name", o.get("name"), re.compile(r"^[a-z][a-z0-9_-]{0,30}$"), "service name")
        if name in names:
            p.add(f"{k}.name", name, "is already used by another service")
        names.add(name)
        port = _int(p, f"{k}.port", o.get("port"), 1, 65535)
        if port is not None and port in ports:
            p.add(f"{k}.port", port, "is already used by another service")
        ports.add(port)
        bport = _int(p, f"{k}.backendPort", o.get("backendPort", port or 1), 1, 65535)
        balance = o.get("balance", d.get("balance"))
        if balance not in BALANCE_ALGORITHMS:
            p.add(f"{k}.balance", balance, f"must be one of {', '.join(BALANCE_ALGORITHMS)}")
        sticky = _bool(p, f"{k}.sticky", o.get("sticky", d.get("sticky")))
        expire = _str(p, f"{k}.stickyExpire", o.get("stickyExpire", d.get("stickyExpire")), DURATION_RE, "duration")
        protocol = o.get("protocol", "http")
        if protocol not in ("http", "tcp"):
            p.add(f"{k}.protocol", protocol, "must be http (Apache on the backends) or tcp (a TCP banner)")
        tls = _bool(p, f"{k}.backendTls", o.get("backendTls", port == 443 and protocol == "http"))
        if tls and protocol == "tcp":
            p.add(f"{k}.backendTls", tls, "needs protocol: http (the TCP banner speaks no TLS)")
        transparency = o.get("transparency", "tproxy")
        if transparency not in TRANSPARENCY:
            p.add(f"{k}.transparency", transparency, f"must be one of {', '.join(TRANSPARENCY)}")
        elif transparency == "forwarded-for" and (protocol != "http" or tls):
            p.add(f"{k}.transparency", transparency, "needs protocol: http without backendTls (HAProxy adds a header)")
        check = _service_check(p, f"{k}.check", o.get("check"), protocol)
        if port is not None and bport is not None:
            svc = Service(name, port, bport, str(balance), sticky, expire, tls, protocol, transparency, check)
            for other in out:  # one listener per backend port: services that share it must agree
                if other.backend_port == bport and (other.protocol, other.backend_tls, other.transparency) != (
                    protocol,
                    tls,
                    transparency,
                ):
                    p.add(f"{k}.backendPort", bport, f"is shared with service {other.name}, served differently")
            out.append(svc)
    return tuple(out)


CHECK_KINDS = {"http": ("http", "connect"), "tcp": ("banner", "smtp", "connect")}
CHECK_PATH_RE = re.compile(r"^/[\x21-\x7e]{0,200}$")  # printable, no space: one token in haproxy.cfg
CHECK_EXPECT_RE = re.compile(r"^[\x20-\x7e]{1,64}$")


def _service_check(p: _Problems, key: str, obj: Any, protocol: str) -> ServiceCheck:
    """services[].check: how haproxy checks this service's backends. Absent: the protocol's
    default, which works on the lab's backends."""
    default = ServiceCheck.default(protocol)
    if obj is None:
        return default
    o = _keys(p, key, obj, {"type", "path", "status", "expect"})
    kinds = CHECK_KINDS.get(protocol, ())
    kind = o.get("type", default.kind)
    if kind not in kinds:
        p.add(f"{key}.type", kind, f"must be one of {', '.join(kinds)} for a {protocol} service")
        return default
    allowed = {"http": {"type", "path", "status"}, "banner": {"type", "expect"}}.get(kind, {"type"})
    for extra in sorted((set(o) - allowed) & {"path", "status", "expect"}):  # unknown keys: _keys said so
        p.add(f"{key}.{extra}", o[extra], f"does not apply to a {kind} check")
    path = _str(p, f"{key}.path", o.get("path", default.path), CHECK_PATH_RE, "path (/..., no spaces)")
    status = _int(p, f"{key}.status", o.get("status", default.status), 100, 599) or default.status
    expect = o.get("expect", default.expect)
    if not isinstance(expect, str) or not CHECK_EXPECT_RE.match(expect) or '"' in expect or "\\" in expect:
        p.add(f"{key}.expect", expect, "must be 1-64 printable characters, without quotes or backslashes")
        expect = default.expect
    return ServiceCheck(kind, path, status, expect)


def _haproxy(p: _Problems, obj: Any, services: tuple[Service, ...]) -> HaproxyOptions:
    o = _keys(p, "haproxy", obj, {"peersPort", "statsPort", "statsUser"})
    peers = _int(p, "haproxy.peersPort", o.get("peersPort"), 1, 65535) or 10000
    stats = _int(p, "haproxy.statsPort", o.get("statsPort"), 0, 65535)
    user = _str(p, "haproxy.statsUser", o.get("statsUser"), re.compile(r"^[a-z][a-z0-9_-]{0,31}$"), "user name")
    used = {s.port: f"{NS}:services[{s.name}].port" for s in services}
    for key, port in (("haproxy.peersPort", peers), ("haproxy.statsPort", stats)):
        if port in used:
            p.add(key, port, f"is already used by {used[port]}")
        elif port:
            used[port] = f"{NS}:{key}"
    return HaproxyOptions(peers, stats or 0, user)


def _health(p: _Problems, obj: Any) -> HealthCheck | None:
    o = _keys(p, "healthCheck", obj, {"interval", "rise", "fall"})
    interval = _str(p, "healthCheck.interval", o.get("interval"), DURATION_RE, "duration (e.g. 2s, 500ms)")
    rise = _int(p, "healthCheck.rise", o.get("rise"), 1, 100)
    fall = _int(p, "healthCheck.fall", o.get("fall"), 1, 100)
    return HealthCheck(interval, rise, fall) if rise and fall else None


def _vrrp(p: _Problems, obj: Any) -> Vrrp | None:
    o = _keys(p, "vrrp", obj, {"routerId", "advertInterval", "version", "mode", "preempt", "haproxyCheck"})
    rid = _int(p, "vrrp.routerId", o.get("routerId"), 1, 255)
    version = o.get("version")
    if version not in (2, 3):
        p.add("vrrp.version", version, "must be 2 (with PASS authentication) or 3 (sub-second adverts)")
    mode = o.get("mode")
    if mode not in ("unicast", "multicast"):
        p.add("vrrp.mode", mode, "must be unicast (adverts to the peers only) or multicast")
    preempt = _bool(p, "vrrp.preempt", o.get("preempt"))
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
    if rid and ok_adv and version in (2, 3) and mode in ("unicast", "multicast"):
        return Vrrp(rid, ok_adv, version, mode == "unicast", preempt, check)
    return None


def _vm(p: _Problems, obj: Any) -> VmSize:
    o = _keys(p, "vm", obj, {"vcpu", "memoryMiB", "diskGiB"})
    return VmSize(
        vcpu=_int(p, "vm.vcpu", o.get("vcpu"), 1, 64) or 1,
        memory_mib=_int(p, "vm.memoryMiB", o.get("memoryMiB"), 512, 262144) or 1024,
        disk_gib=_int(p, "vm.diskGiB", o.get("diskGiB"), 4, 2048) or 10,
    )


def _ssh(p: _Problems, obj: Any, given: Mapping[str, Any]) -> Ssh:
    o = _keys(p, "ssh", obj, {"user", "publicKey"})
    user = _str(p, "ssh.user", o.get("user"), re.compile(r"^[a-z_][a-z0-9_-]{0,31}$"), "user name")
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


def _test_clients(p: _Problems, obj: Any, net: Network | None, taken: dict) -> tuple[IPv4Address, ...] | None:
    if obj is None:
        return None
    if not isinstance(obj, list):
        p.add("testClients", obj, "must be a list of addresses on the lab subnet")
        return None
    out = []
    for i, item in enumerate(obj):
        a = _addr(p, f"testClients[{i}]", item)
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


def engine_form(raw: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """A stack file's keys as the Pulumi engine hands them to a program (objects as JSON text),
    the given secrets (`halab:` keys without the prefix) added; and which keys are secret."""
    cfg = {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    cfg.update({f"{NS}:{k}": v for k, v in secrets.items()})
    return cfg, [f"{NS}:{k}" for k in secrets]


def load_stack_file(path: str) -> dict[str, Any]:
    """The `config:` mapping of a Pulumi.<stack>.yaml (encrypted values stay `{secure: ...}`)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: is not a YAML mapping"])
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError([f"{path}: config: must be a mapping"])
    return cfg
