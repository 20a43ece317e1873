"""Renders every file a node needs, from the model and the templates in `halab/node/templates/`.

Pure functions: (model, host, credentials) -> {absolute path on the node: content}. The
Pulumi driver, the namespace lab and `scripts/render` all call these; none renders its own.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import quoteattr

import jinja2
import yaml

from halab.core.model import Credentials, Lab, Node
from halab.node import FILES as NODE_FILES
from halab.node import TEMPLATES
from halab.node.paths import PATHS, fill

PLACEHOLDER_SSH_KEY = "ssh-ed25519 AAAA-the-key-pulumi-up-generates halab"


_JINJA = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,  # a name the template uses and the renderer did not give fails
    keep_trailing_newline=True,
    trim_blocks=True,  # a line holding only a block tag leaves no line in the file
    lstrip_blocks=True,
    autoescape=False,  # config files, not HTML
)
_JINJA.globals["paths"] = PATHS  # {{ paths.HAPROXY_CFG }}: the node paths, declared once


def whole(template_name: str, /, **values: object) -> str:
    """A whole file from its Jinja2 template (halab/node/templates/*.j2): the template reads
    like the file it makes, its conditionals inside."""
    return _JINJA.get_template(template_name).render(**values)


def node_file(name: str) -> str:
    """A file shipped to every node alike (scripts, systemd units: see halab/node/files/), its
    `@NAME@`s filled with the node paths."""
    return fill((NODE_FILES / name).read_text(), f"halab/node/files/{name}")


def frr_conf(lab: Lab, host: Node, creds: Credentials) -> str:
    """A load balancer's FRR config in ecmp mode: its BGP session (and BFD) to the router,
    announcing the VIP/32 while its haproxy serves (docs/ecmp.md)."""
    assert lab.bgp is not None, "frr_conf is for ecmp mode"
    return whole("frr-lb.conf.j2", lab=lab, host=host, bgp=lab.bgp, password=creds.bgp_password)


def frr_router_conf(lab: Lab, creds: Credentials, name: str = "router") -> str:
    """The upstream router's FRR config in ecmp mode: what the lab's router runs, and what a
    real one needs (docs/ecmp.md shows it)."""
    assert lab.bgp is not None, "frr_router_conf is for ecmp mode"
    return whole("frr-router.conf.j2", lab=lab, name=name, bgp=lab.bgp, password=creds.bgp_password)


def haproxy_cfg(lab: Lab, host: Node) -> str:
    return whole("haproxy.cfg.j2", lab=lab, host=host)


# A server new to haproxy at a reload: DOWN (op state 0), its check not run yet (status 1, INI),
# health 0 (`rise` passes bring it UP), weight 1 as the config leaves it. Format 1 of haproxy's
# server-state file; matched by backend and server name, so the IDs (0) are not read.
NEW_SERVER_STATE = "0 {backend} 0 {server} {address} 0 0 1 1 0 1 0 0 0 0 0 0 - {port} -"


def haproxy_new_servers_state(lab: Lab) -> str:
    """Every server of haproxy.cfg as a newcomer: halab-haproxy-state writes these lines into the
    server-state file for the servers the running haproxy does not have (at that address and
    port), so they start DOWN and get clients only once their checks pass (every server here is
    checked). The others keep their state across the reload."""
    lines = [
        NEW_SERVER_STATE.format(backend=svc.haproxy_backend, server=b.name, address=b.address, port=svc.backend_port)
        for svc in lab.services
        for b in lab.pool(svc)
    ]
    head = "1\n# Rendered by ha-lb-lab: how each server starts when a reload brings it in (halab-haproxy-state).\n"
    return head + "\n".join(lines) + "\n"


def serving_conf(lab: Lab) -> str:
    """What `up` waits for at its end (lb-serving.sh): every server of every pool UP, within
    the time a server DOWN at haproxy's start needs to rise, and a margin for a slow guest."""
    return (
        "# Rendered by ha-lb-lab: the servers `up` waits for, UP on this haproxy (lb-serving.sh).\n"
        f"SERVING_WITHIN={lab.serving_within}\nSERVING_SERVERS='{pool_servers(lab)}'\n"
        + (
            "# ecmp mode: and the VIP announced to the router (the session up, BFD up where it runs)\n"
            f"SERVING_BGP_PEER={lab.bgp.peer}\nSERVING_VIP={lab.vip}\nSERVING_BFD={1 if lab.bgp.bfd else 0}\n"
            if lab.bgp is not None
            else ""
        )
    )


def pool_servers(lab: Lab, backend: Node | None = None) -> str:
    """haproxy's BACKEND/SERVER names: of one backend, or of every pool."""
    return " ".join(
        f"{svc.haproxy_backend}/{b.name}" for svc in lab.services for b in lab.pool(svc) if backend in (None, b)
    )


def handoff_conf(lab: Lab) -> str:
    """The VIP's hand-off around a load balancer's replacement (lb-handoff.sh)."""
    port = lab.services[0].port
    return (
        "# Rendered by ha-lb-lab: the VIP's hand-off around this load balancer's replacement (lb-handoff.sh).\n"
        f"HANDOFF_MODE={lab.mode}\n"
        f"HANDOFF_VIP={lab.vip}\nHANDOFF_PORT={port}\nHANDOFF_WITHIN={lab.handoff_within}\n"
        f"DRAIN_WITHIN={lab.vrrp.handoff_drain_seconds}\nREADY_WITHIN={lab.serving_within}\n"
        f"READY_SERVERS='{pool_servers(lab)}'\n"
        + (
            "# ecmp mode: ready once the VIP is announced to the router (BFD up where it runs)\n"
            f"HANDOFF_BGP_PEER={lab.bgp.peer}\nHANDOFF_BFD={1 if lab.bgp.bfd else 0}\n"
            if lab.bgp is not None
            else ""
        )
    )


def join_conf(lab: Lab) -> str:
    """When a first keepalived start waits for haproxy (lb-keepalived.sh): nothing of the pools,
    so that a backend added does not run the keepalived step again."""
    return (
        "# Rendered by ha-lb-lab: a first keepalived start beside a peer that holds the VIP (lb-keepalived.sh).\n"
        f"JOIN_VIP={lab.vip}\nJOIN_PORT={lab.services[0].port}\nJOIN_WITHIN={lab.serving_within}\n"
    )


def drain_conf(lab: Lab, backend: Node) -> str:
    """One backend out of and back into a load balancer's haproxy (lb-drain.sh)."""
    return (
        f"# Rendered by ha-lb-lab: {backend.name} out of and back into this haproxy's service (lb-drain.sh).\n"
        f"DRAIN_BACKEND={backend.name}\nDRAIN_ADDRESS={backend.address}\n"
        f"DRAIN_SERVERS='{pool_servers(lab, backend)}'\n"
        f"DRAIN_WITHIN={lab.drain_within}\nREADY_WITHIN={lab.serving_within}\n"
    )


def vrrp_peers(lab: Lab, host: Node) -> list[Node]:
    return [lb for lb in lab.load_balancers if lb.name != host.name]


def haproxy_secrets_env(creds: Credentials) -> str:
    """Secrets haproxy.cfg reads from its environment (systemd EnvironmentFile), so that the
    config itself holds none and stays reviewable."""
    return f"HALAB_STATS_PASSWORD={creds.stats_password}\n"


def keepalived_conf(lab: Lab, host: Node, creds: Credentials) -> str:
    return whole("keepalived.conf.j2", lab=lab, host=host, peers=vrrp_peers(lab, host), creds=creds)


def haproxy_watch_conf(lab: Lab) -> str:
    return (
        "# Read by halab-haproxy-watch: how often it asks haproxy, how long an answer may take,\n"
        "# how many misses in a row are a failure, how long after a reload begins misses are\n"
        "# forgiven, and haproxy's health frontend; how often it asks whether every service has\n"
        "# a server UP here, and how many noes in a row make this node step back.\n"
        f"PERIOD={lab.vrrp.watch_period:g}\n"
        f"TIMEOUT={lab.vrrp.watch_timeout:g}\n"
        f"FALL={lab.vrrp.watch_fall}\n"
        f"RELOAD_GRACE={lab.vrrp.reload_grace}\n"
        f"HEALTH_PORT={lab.haproxy.health_port}\n"
        f"SERVING_PERIOD={lab.vrrp.serving_period:g}\n"
        f"SERVING_FALL={lab.vrrp.serving_fall}\n"
        + (
            "# ecmp mode: while haproxy is healthy and serves, the VIP on lo, which bgpd announces\n"
            f"ANNOUNCE={lab.vip}\n"
            if lab.mode == "ecmp"
            else ""
        )
    )


def vrrp_conf(lab: Lab, host: Node) -> str:
    """Read by halab-keepalived-hooks: the VRRP filter before keepalived starts; after it, the
    VIP and the second-chance rule released, that rule named as keepalived.conf names it (both
    from the model's PacketPath)."""
    peers = " ".join(str(lb.address) for lb in vrrp_peers(lab, host))
    return (
        f"# Read by {PATHS['KEEPALIVED_HOOKS_BIN']}.\n"
        f"VIP={lab.vip}\n"
        f"IFACE={lab.network.interface}\n"
        "# VRRP (IP protocol 112) is accepted from these addresses only.\n"
        f'PEERS="{peers}"\n'
        "# keepalived's second-chance rule (virtual_rules), removed should keepalived die leaving it.\n"
        + _second_chance_rule(lab)
    )


def _second_chance_rule(lab: Lab) -> str:
    """keepalived's second-chance rule (virtual_rules) as KEY=VALUE lines: halab-tproxy and
    halab-second-chance read it from tproxy.conf, halab-keepalived-hooks from vrrp.conf."""
    pp = lab.packet_path
    return (
        f"SECOND_MARK={pp.second_chance_mark}\nSECOND_TABLE={pp.second_chance_table}\n"
        f"SECOND_PREF={pp.second_chance_pref}\n"
    )


def lb_sysctl(lab: Lab, host: Node) -> str:
    iface = lab.network.interface
    low, high = lab.local_port_share(host)
    return (
        "# ha-lb-lab load balancer: forward for the backends.\n"
        "net.ipv4.ip_forward = 1\n"
        "# haproxy binds its peers and stats listeners to this node's address, which may come up\n"
        "# after haproxy does (at boot).\n"
        "net.ipv4.ip_nonlocal_bind = 1\n"
        "# Backends route through the VIP on their own subnet: an ICMP redirect would teach them\n"
        "# to bypass the load balancer, and their replies would then leave without TPROXY.\n"
        "net.ipv4.conf.all.send_redirects = 0\n"
        "net.ipv4.conf.default.send_redirects = 0\n"
        f"net.ipv4.conf.{iface}.send_redirects = 0\n"
        "# The second chance (docs/handoff.md): the `socket` match also finds TIME_WAIT sockets, and\n"
        "# one left by a connection this node closed would swallow the packets of the same client\n"
        "# address and port held by the previous holder. A proxy closes its side at once instead.\n"
        "net.ipv4.tcp_max_tw_buckets = 0\n"
        "# Its own share of the ports: haproxy's connections to the backends carry the client's\n"
        "# address (usesrc clientip), and two load balancers must never pick the same address and\n"
        "# port towards a backend while both hold connections.\n"
        f"net.ipv4.ip_local_port_range = {low} {high}\n" + (_ecmp_lb_sysctl(iface) if lab.mode == "ecmp" else "")
    )


def _ecmp_lb_sysctl(iface: str) -> str:
    """ecmp mode: the VIP is on every load balancer's loopback, and none may answer ARP for it
    (the router reaches it by BGP's next hops, each load balancer's own address)."""
    return (
        "# ecmp mode: answer ARP only for the addresses of the interface asked on (not the VIP on\n"
        "# lo), and never use the VIP as an ARP source.\n"
        + "".join(f"net.ipv4.conf.{i}.arp_ignore = 1\nnet.ipv4.conf.{i}.arp_announce = 2\n" for i in ("all", iface))
    )


def tproxy_conf(lab: Lab, host: Node) -> str:
    """Read by halab-tproxy (the packet path) and halab-second-chance (the previous holder)."""
    ports = sorted({s.port for s in lab.services})
    # Only `usesrc clientip` connections are addressed to the client; the others' replies come to
    # this node's own address, whichever holds the VIP. By port and subnet, not by backend: a
    # backend added or removed changes nothing here.
    ports_back = sorted({s.backend_port for s in lab.services if s.transparency == "tproxy"})
    pp = lab.packet_path
    return (
        f"# Read by {PATHS['TPROXY_BIN']} and {PATHS['SECOND_CHANCE_BIN']}.\n"
        f"VIP={lab.vip}\n"
        f"IFACE={lab.network.interface}\n"
        + "# haproxy's frontends listen here; TPROXY brings them the SYNs to VIP:port.\n"
        f"LISTEN_IP={lab.haproxy.listen_ip}\n"
        f'PORTS="{" ".join(str(p) for p in ports)}"\n'
        "# replies from these backend ports on this subnet may belong to the previous holder's connections\n"
        f"SUBNET={lab.network.cidr}\n"
        f'BACKEND_PORTS="{" ".join(str(p) for p in ports_back)}"\n'
        "# the peer load balancers, and where each shows it is alive (haproxy's peers port)\n"
        f'PEERS="{" ".join(str(lb.address) for lb in vrrp_peers(lab, host))}"\n'
        f"PEERS_PORT={lab.haproxy.peers_port}\n"
        "# seconds after the previous holder's last advert during which it still gets a second chance\n"
        f"WINDOW={lab.vrrp.second_chance_window}\n"
        "# the packet path's marks, routing tables and rule priorities (the model's PacketPath)\n"
        f"DIVERT_MARK={pp.divert_mark}\nDIVERT_TABLE={pp.divert_table}\n"
        + _second_chance_rule(lab)
        + f"LOCAL_PREF={pp.local_pref}\nLAST_PREF={pp.last_pref}\n"
        + (_ecmp_tproxy_conf(lab, host) if lab.mode == "ecmp" else "")
    )


def _ecmp_tproxy_conf(lab: Lab, host: Node) -> str:
    """ecmp mode's second chance (halab-tproxy): a packet of a connection held by a peer is
    copied to the peers (PEERS); a copy is known by the MAC of the peer that sent it."""
    macs = " ".join(lb.mac for lb in vrrp_peers(lab, host))
    return (
        "# ecmp mode: every load balancer serves the VIP; a packet of a connection that a rehash\n"
        "# brought here is copied to each peer, and a peer's copy (its MAC) is never copied again\n"
        f'MODE=ecmp\nPEER_MACS="{macs}"\n'
    )


def backend_sysctl(lab: Lab) -> str:
    iface = lab.network.interface
    return (
        "# ha-lb-lab backend: replies must go through the VIP; ignore redirects that say otherwise.\n"
        "net.ipv4.conf.all.accept_redirects = 0\n"
        "net.ipv4.conf.default.accept_redirects = 0\n"
        f"net.ipv4.conf.{iface}.accept_redirects = 0\n"
    )


def backend_routes_conf(lab: Lab) -> str:
    pp = lab.packet_path
    if lab.mode == "ecmp":
        # every load balancer carries connections: each one's replies go back through it
        returns = " ".join(f"{lb.mac}={lb.address}" for lb in lab.load_balancers)
        return (
            f"# Read by {PATHS['ROUTES_BIN']} (ecmp mode).\n"
            f"GATEWAY={lab.network.gateway}\n"
            f"IFACE={lab.network.interface}\n"
            "# Each load balancer's MAC and address: a connection it opened to this backend is marked\n"
            "# by its MAC, and the replies go back by that mark's table to that load balancer.\n"
            f'RETURN="{returns}"\n'
            f"RETURN_MARK={pp.return_mark}\nRETURN_TABLE={pp.return_table}\nRETURN_PREF={pp.return_pref}\n"
        )
    clients = " ".join(str(c) for c in lab.test_clients)
    return (
        f"# Read by {PATHS['ROUTES_BIN']}.\n"
        f"GATEWAY={lab.vip}\n"
        f"IFACE={lab.network.interface}\n"
        "# On-subnet test clients: without a route via the VIP the reply would go straight to the\n"
        "# client, from the backend's address, and the client would reset the connection.\n"
        f'TEST_CLIENTS="{clients}"\n'
        f"RETURN_PREF={pp.return_pref}\n"
    )


def apache_ports_conf(lab: Lab, host: Node) -> str:
    """Apache listens on the ports of the HTTP services this backend serves, and no other: a
    port outside its pools is refused."""
    ports = sorted(s.backend_port for s in lab.http_services(host))
    head = f"# Rendered by ha-lb-lab for {host.name}: one Listen per HTTP service it serves.\n"
    return head + "".join(f"Listen {p}\n" for p in ports)


def apache_site(lab: Lab, host: Node) -> str:
    return whole("apache-site.conf.j2", lab=lab, host=host)


def index_page(host: Node) -> str:
    """The page a backend serves: which backend answered, and the client address it saw."""
    return whole("index.shtml.j2", host=host.name)


def banner_conf(lab: Lab, host: Node) -> str:
    """Read by halab-banner: the TCP services' ports on this backend."""
    lines = [f"# halab-banner on {host.name}: PORT and whether a PROXY protocol header comes first."]
    lines += [
        f"{s.backend_port} {'proxy' if s.transparency == 'proxy-protocol' else 'plain'}" for s in lab.tcp_services(host)
    ]
    return "\n".join(lines) + "\n"


# The metric of the default route via the hypervisor that cloud-init gives every node: above
# the gateway step's route via the VIP (metric 0).
HYPERVISOR_ROUTE_METRIC = 1024


def cloud_init(lab: Lab, host: Node, ssh_public_key: str) -> dict[str, str]:
    """user-data, meta-data and network-config: a static address, so nothing waits for a DHCP lease."""
    user_data = {
        "hostname": host.name,
        "manage_etc_hosts": True,
        "ssh_pwauth": False,
        "users": [
            {
                "name": lab.ssh.user,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [ssh_public_key.strip()],
            }
        ],
    }
    net = lab.network
    network_config = {
        "version": 2,
        "ethernets": {
            "lab": {
                "match": {"macaddress": host.mac},
                "set-name": net.interface,
                "addresses": [f"{host.address}/{net.prefix}"],
                # Backends start with the hypervisor as gateway (to install packages); their
                # gateway step adds the default route via the VIP at a lower metric once the
                # load balancers serve it. Both are kept apart by the metric, so networkd,
                # re-adding its own at a restart, never replaces the one via the VIP.
                "routes": [{"to": "default", "via": str(net.gateway), "metric": HYPERVISOR_ROUTE_METRIC}],
                # networkd keeps what it did not make on this link at a restart (the VIP that
                # keepalived adds, the routes via the VIP): KeepConfiguration=yes.
                "critical": True,
                "nameservers": {"addresses": [str(net.gateway)]},
            }
        },
    }
    user, network = (
        "#cloud-config\n" + yaml.safe_dump(user_data, sort_keys=False),
        yaml.safe_dump(network_config, sort_keys=False),
    )
    # cloud-init runs its per-instance modules (users and keys, network) again only for a new
    # instance-id: it changes whenever what they apply changes (a new SSH key, an address).
    instance = f"{host.name}-{hashlib.sha256((user + network).encode()).hexdigest()[:12]}"
    return {
        "user-data": user,
        "meta-data": yaml.safe_dump({"instance-id": instance, "local-hostname": host.name}, sort_keys=False),
        "network-config": network,
    }


def domain_disk_xslt(root_path: str) -> str:
    """The domain's XSLT (the provider's `xml.xslt`): its root disk, a pool volume, attached as
    the file at `root_path` (the volume's key, which is its path in a directory pool)."""
    # an attribute value template: braces would be expressions
    return whole("domain-disk-as-file.xslt.j2", path=quoteattr(root_path.replace("{", "{{").replace("}", "}}")))
