"""The validated lab model: what every driver (Pulumi, the namespace lab, `scripts/render`) consumes.

Frozen dataclasses only; nothing here reads files, talks to libvirt or imports Pulumi. The
facts every renderer and checker shares (ports, timers, credentials) live here, not where one
of them happens to use them.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

Role = Literal["lb", "backend"]


@dataclass(frozen=True)
class Credentials:
    """The secrets, which only the driver knows (the stack's secret config, or a lab's own):
    rendered into files, and never part of the Lab, which a review or a log may print."""

    vrrp_auth_pass: str = field(repr=False)
    stats_password: str = field(default="", repr=False)
    bgp_password: str = field(default="", repr=False)  # ecmp mode: the TCP MD5 key of each BGP session; "" for none

    @classmethod
    def generate(cls) -> Credentials:
        """Fresh random passwords, for a lab driver that keeps its own (what `scripts/setup`
        sets as the stack's secrets): 8 characters for keepalived's PASS, 24 for the stats page,
        16 for BGP's TCP MD5 key (ecmp mode: the lab's sessions are authenticated, as a
        production router's would be)."""
        return cls(
            vrrp_auth_pass=secrets.token_hex(4),
            stats_password=secrets.token_urlsafe(18),
            bgp_password=secrets.token_hex(8),
        )

    @classmethod
    def placeholder(cls) -> Credentials:
        """For review renders: obviously fake, yet still valid for `keepalived -t`."""
        return cls(vrrp_auth_pass="REDACTED", stats_password="REDACTED-REDACTED")


@dataclass(frozen=True)
class Network:
    name: str
    cidr: IPv4Network
    gateway: IPv4Address  # the hypervisor's address on a libvirt network; the LAN's router when bridged
    mode: Literal["nat", "route", "bridge"]
    interface: str  # NIC name inside every node; keepalived and the scripts name it
    bridge: str | None = None  # bridge mode: an existing bridge on every hypervisor, one L2 segment

    @property
    def prefix(self) -> int:
        return self.cidr.prefixlen


@dataclass(frozen=True)
class Node:
    name: str
    address: IPv4Address
    role: Role
    priority: int | None = None  # VRRP priority, load balancers only
    hypervisor: str = "default"  # the libvirt host it runs on (Libvirt.hypervisors)

    @property
    def mac(self) -> str:
        """A stable MAC from the address, so cloud-init can match the NIC before it has a name."""
        b = self.address.packed
        return f"52:54:00:{b[1]:02x}:{b[2]:02x}:{b[3]:02x}"


@dataclass(frozen=True)
class ServiceCheck:
    """How haproxy checks a backend for one service: it asks the service itself, since the
    kernel still accepts connections for a hung server and a plain connect would pass it.
    http: `option httpchk GET path`, healthy on `status` (over TLS where the backend speaks it);
    banner: the greeting contains `expect` (the lab's TCP banner says 220, IMAP says `* OK`);
    smtp: `option smtpchk` (HELO answered 2xx); connect: a TCP connect only, the seed's check."""

    kind: Literal["http", "banner", "smtp", "connect"]
    path: str = "/"
    status: int = 200
    expect: str = "220"

    @staticmethod
    def default(protocol: str) -> ServiceCheck:
        """What works on the lab's backends: the who-am-I page, or the banner's 220 greeting."""
        return ServiceCheck("http") if protocol == "http" else ServiceCheck("banner")


@dataclass(frozen=True)
class Service:
    name: str
    port: int  # on the VIP
    backend_port: int
    balance: str
    sticky: bool
    sticky_expire: str
    backend_tls: bool  # the backend's web server speaks TLS on backend_port
    protocol: Literal["http", "tcp"]  # what the backends serve: Apache, or a TCP banner
    # How the backend learns the client's address: TPROXY (the seed's way: the connection comes
    # from the client's own address), the PROXY protocol header, or X-Forwarded-For (HTTP only).
    transparency: Literal["tproxy", "proxy-protocol", "forwarded-for"]
    check: ServiceCheck  # how haproxy checks the backends (config: ServiceCheck.default when absent)
    # The backends that serve it, by name (`services[].backends`); empty: every backend. A mail
    # service then never reaches the web servers: Lab.pool.
    backends: tuple[str, ...] = ()

    @property
    def haproxy_backend(self) -> str:
        """Its backend's name in haproxy.cfg, which the runtime API, the stats and the server
        state file name it by."""
        return f"bk_{self.name}"


@dataclass(frozen=True)
class HealthCheck:
    interval: str  # HAProxy's syntax: a number and a unit (ms, s, m, h, d); no unit means ms
    rise: int
    fall: int
    timeout_seconds: int = 2  # haproxy.cfg's `timeout check`: how long a check waits for its answer

    @property
    def interval_seconds(self) -> float:
        number = self.interval.rstrip("smhd")
        unit = self.interval[len(number) :] or "ms"
        return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


@dataclass(frozen=True)
class HaproxyOptions:
    peers_port: int  # stick tables replicated between the load balancers over TCP
    stats_port: int  # 0: no stats page
    stats_user: str
    # haproxy's own health frontend (monitor-uri), on the loopback of each load balancer: what
    # keepalived's checks ask (halab-haproxy-watch, halab-check-haproxy).
    health_port: int = 8405
    # Where the frontends listen, on each load balancer's loopback: TPROXY brings them the SYNs to
    # VIP:port. Not the VIP itself, whose listener the `socket` match would find for any packet to
    # the VIP, leaving no way to tell a packet of a connection held here from one held by the
    # previous holder (docs/handoff.md).
    listen_ip: str = "127.0.0.23"


@dataclass(frozen=True)
class Vrrp:
    router_id: int
    advert_interval: float  # seconds: whole with VRRPv2, hundredths with VRRPv3
    version: int  # 2 (with PASS authentication) or 3 (sub-second adverts, no authentication)
    unicast: bool  # adverts to the peer load balancers only (multicast is often blocked)
    preempt: bool  # a recovered higher-priority node takes the VIP back
    # watch: this node's haproxy answers (pidfile, listening frontends, a request to its health
    # frontend), fast path (the watcher) + safety-net script;
    # process-name: the seed's check (any process called haproxy, every second), for comparison
    haproxy_check: Literal["watch", "process-name"] = "watch"
    # Misses in a row before the watcher calls haproxy unhealthy: a hang is seen within
    # 2 x (TIMEOUT + PERIOD) (1.2 s by default), and one slow answer (a reload on a starved CPU
    # took 0.5 s on an emulated guest) moves no VIP.
    watch_fall: int = 2
    # A planned hand-off (keepalived stopped on the holder): how long the old holder keeps
    # serving the connections it holds, reached through the new holder's second chance, before
    # it is free to go (halab-second-chance, lb-handoff.sh).
    handoff_drain_seconds: int = 300
    # How often the watcher asks haproxy whether every service has a server UP here, and how
    # many noes in a row lower this node's priority (keepalived's haproxy_serving track): one no
    # can be a reload's old process, which counts no server as it stops.
    serving_period: float = 0.5
    serving_fall: int = 2

    @property
    def second_chance_window(self) -> int:
        """Seconds after the last advert of the previous holder during which the new holder still
        forwards to it: the drain, and 30 s for the drain's own end to reach the clients."""
        return self.handoff_drain_seconds + 30

    @property
    def check_interval(self) -> int:
        """How often keepalived runs the safety-net script (halab-check-haproxy): whole seconds
        (keepalived's unit), at least 2. The watcher (every `watch_period`) is the fast path;
        the script is there should the watcher die, and each run forks a shell and `ss`, which
        costs a fifth of a second of CPU on an emulated guest."""
        return max(2, math.ceil(self.advert_interval))

    @property
    def check_timeout(self) -> int:
        """How long keepalived lets the safety-net script run before counting a failure: 10 s,
        or the master-down interval (3 adverts) and a second where that is longer. The script
        bounds its own request to haproxy (0.5 s read), so a hung haproxy that accepts fails it
        that fast; this timeout is for a connect that blocks (a hung haproxy's accept queue
        full), which the watcher catches within its own TIMEOUT anyway. Past the script's own
        bound, only a starved CPU delays it, and that is no reason to move the VIP: keepalived,
        one process already running, sends its adverts through a stall that a fork of bash and
        `ss` does not finish in. With the master-down interval and a second (4 s), the script
        timed out on the VM lab's master while steps ran beside a booting guest, and keepalived
        put it in FAULT twice in one third-backend test (the VIP moved, 11 requests failed)."""
        return max(10, self.master_down_and_a_second)

    @property
    def watch_period(self) -> float:
        """How often the haproxy watcher checks: within one advert interval, not busier than 50/s."""
        return max(0.02, min(0.1, self.advert_interval / 2))

    @property
    def watch_timeout(self) -> float:
        """How long haproxy may take to answer the watcher before it counts as hung: half an
        advert interval, between 0.1 s and 0.5 s. A hung haproxy is seen within this plus one
        period; a merely busy one answers its health frontend in milliseconds."""
        return max(0.1, min(0.5, self.advert_interval / 2))

    @property
    def reload_grace(self) -> int:
        """How long after a reload begins both checks (the watcher and the safety-net script)
        forgive haproxy's missed answers: 10 s, or the master-down interval and a second where
        that is longer, as long as keepalived lets the script run. A reload on a loaded CPU can
        starve the old worker's answers for seconds: on the VM lab's emulated guests a load
        balancer went FAULT for reloads that kept every connection, with a grace of the
        master-down interval and a second (4 s) on CI's slower host, and a master that does moves
        the VIP and fails the requests in flight. A hang begun within a reload is seen this much
        later; haproxy's exit, at once still."""
        return max(10, self.master_down_and_a_second)

    @property
    def master_down_and_a_second(self) -> int:
        """The master-down interval (3 adverts), in whole seconds, and a second more: VRRP's own
        patience with a silent master, which the checks' patience is measured against."""
        return math.ceil(3 * self.advert_interval) + 1

    @property
    def advert_text(self) -> str:
        return f"{self.advert_interval:g}"


@dataclass(frozen=True)
class Bfd:
    """BFD on each load balancer's BGP session (ecmp mode): a lost link or node is seen within
    interval x multiplier, where BGP's own hold timer takes seconds."""

    interval_ms: int  # both transmit and receive
    multiplier: int

    @property
    def detect_seconds(self) -> float:
        return self.interval_ms * self.multiplier / 1000


@dataclass(frozen=True)
class Bgp:
    """ecmp mode: every load balancer announces the VIP/32 to one upstream router over eBGP while
    its haproxy serves, and the router spreads flows over them. The load balancers share one AS,
    so the router sees equal AS paths and needs no multipath relax (docs/ecmp.md)."""

    asn: int  # the load balancers'
    peer: IPv4Address  # the upstream router, on the lab network (single-hop BFD)
    peer_asn: int
    bfd: Bfd | None
    # BGP's own timers, for a session without BFD (FRR's datacenter profile: 3 s and 9 s)
    keepalive_seconds: int = 3
    hold_seconds: int = 9


@dataclass(frozen=True)
class PacketPath:
    """A load balancer's packet marks, routing tables and rule priorities (docs/handoff.md):
    fixed facts, not config. halab-tproxy, keepalived's virtual_rules, halab-second-chance,
    halab-keepalived-hooks and the bench each name them, so they are rendered from here and
    can never disagree."""

    divert_mark: int = 1  # a packet of a local transparent socket (DIVERT; TPROXY's SYNs too)
    divert_table: int = 100  # where divert_mark leads: every address local (local default dev lo)
    second_chance_mark: int = 2  # a TCP packet to the VIP, or a backend's reply, with no socket here
    second_chance_table: int = 200  # the route to the previous VIP holder (halab-second-chance)
    second_chance_pref: int = 50  # keepalived's rule, second_chance_mark -> table, before the local table
    local_pref: int = 100  # the local table's rule, moved from 0 to after the second chance's
    last_pref: int = 150  # a second_chance_mark packet to the VIP still here: dropped, never forwarded twice
    # A backend in ecmp mode (halab-routes): the connections each load balancer opened are marked
    # return_mark + its place in the list, and their replies go by table return_table + its place
    # (whose default route is that load balancer), at rule priority return_pref + its place.
    return_mark: int = 16
    return_table: int = 110
    return_pref: int = 90


@dataclass(frozen=True)
class VmSize:
    vcpu: int
    memory_mib: int
    disk_gib: int


@dataclass(frozen=True)
class VmSizes:
    """Each role's VM size: `vm`, which `vm.loadBalancers` and `vm.backends` may override key by
    key. A load balancer and a web server rarely need the same machine; and a change to one
    role's size replaces that role's guests only."""

    load_balancer: VmSize
    backend: VmSize

    def of(self, node: Node) -> VmSize:
        return self.load_balancer if node.role == "lb" else self.backend


@dataclass(frozen=True)
class Ssh:
    user: str
    public_key: str | None  # None: the Pulumi program generates a key pair and keeps it secret


@dataclass(frozen=True)
class Hypervisor:
    name: str
    uri: str
    jump_host: str | None  # "user@host:port" when the URI is remote (qemu+ssh://)


@dataclass(frozen=True)
class Libvirt:
    hypervisors: tuple[Hypervisor, ...]
    domain_type: Literal["kvm", "qemu"]
    pool: str  # on every hypervisor
    image: str  # URL or absolute path of the guest cloud image
    image_checksum: str | None = None  # "sha512:HEX" or "sha256:HEX": the image is used only if it matches

    def hypervisor(self, name: str) -> Hypervisor:
        return next(h for h in self.hypervisors if h.name == name)


@dataclass(frozen=True)
class Lab:
    libvirt: Libvirt
    network: Network
    vip: IPv4Address
    load_balancers: tuple[Node, ...]
    backends: tuple[Node, ...]
    services: tuple[Service, ...]
    health_check: HealthCheck
    haproxy: HaproxyOptions
    vrrp: Vrrp
    vm: VmSizes
    ssh: Ssh
    test_clients: tuple[IPv4Address, ...]
    packet_path: PacketPath = PacketPath()  # fixed, not config: every Lab's the same
    # active-standby: one VRRP holder of the VIP carries every connection; ecmp: every load
    # balancer announces the VIP by BGP (`bgp`) and carries a share
    mode: Literal["active-standby", "ecmp"] = "active-standby"
    bgp: Bgp | None = None  # ecmp mode only

    @property
    def serving_penalty(self) -> int:
        """How far a load balancer's VRRP priority drops while one of its services has no server
        UP there (keepalived's haproxy_serving track): below every other load balancer's, so a
        peer that serves keeps the VIP or takes it; every node alike when none serves, so the
        order stays. At most 253: keepalived puts an instance in FAULT at -254."""
        priorities = [lb.priority or 0 for lb in self.load_balancers]
        return min(253, max(priorities) - min(priorities) + 1)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.load_balancers + self.backends

    @property
    def serving_within(self) -> int:
        """Seconds `up` waits at its end for every pool server to be UP on each load balancer:
        a server starts DOWN and needs `rise` checks, each up to an interval plus its timeout;
        doubled, and 30 s more for a guest slowed by its neighbours' boots."""
        hc = self.health_check
        return math.ceil(2 * hc.rise * (hc.interval_seconds + hc.timeout_seconds)) + 30

    @property
    def drain_within(self) -> int:
        """Seconds a backend taken out of service (a roll-out, a removal) is given for the
        connections in flight on it to end before its guest is deleted: the lab's services are
        short requests; past this, the rest are cut and the step says how many."""
        return 30

    @property
    def handoff_within(self) -> int:
        """Seconds a load balancer stopping its keepalived waits for a peer to answer on the
        VIP: the peer takes it on the priority-0 advert at once, or at worst when its
        master-down timer (3 adverts) runs out; and 10 s more for a guest slowed by a neighbour."""
        return math.ceil(3 * self.vrrp.advert_interval) + 10

    def local_port_share(self, host: Node) -> tuple[int, int]:
        """A load balancer's slice of Linux's default ephemeral ports (32768-60999), by its place
        among the load balancers: haproxy connects to the backends from the client's address
        (usesrc clientip), and two load balancers must never pick the same port while both hold
        connections (the second chance, docs/handoff.md)."""
        low, high = 32768, 60999
        share = (high - low + 1) // len(self.load_balancers)
        i = [lb.name for lb in self.load_balancers].index(host.name)
        return low + i * share, low + (i + 1) * share - 1

    def url(self, svc: Service) -> str:
        """Where a client reaches a service through the VIP (a stack output; what verify asks)."""
        scheme = "tcp" if svc.protocol == "tcp" else "https" if svc.backend_tls else "http"
        default = {"http": 80, "https": 443}.get(scheme)
        return f"{scheme}://{self.vip}/" if svc.port == default else f"{scheme}://{self.vip}:{svc.port}/"

    def pool(self, svc: Service) -> tuple[Node, ...]:
        """The backends that serve a service, in the stack's order."""
        return tuple(b for b in self.backends if not svc.backends or b.name in svc.backends)

    def served_by(self, host: Node) -> tuple[Service, ...]:
        """The services a backend serves: those whose pool holds it."""
        return tuple(s for s in self.services if host in self.pool(s))

    def http_services(self, host: Node) -> list[Service]:
        """The HTTP services this backend serves (its pools), one per backend port (services
        sharing one are served alike: config checks it)."""
        return list({s.backend_port: s for s in self.served_by(host) if s.protocol == "http"}.values())

    def tcp_services(self, host: Node) -> list[Service]:
        """The TCP services this backend serves (its pools), one per backend port."""
        return list({s.backend_port: s for s in self.served_by(host) if s.protocol == "tcp"}.values())

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)
