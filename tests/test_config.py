"""Stack config parsing: the defaults reproduce the seed, and every bad input is named."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address

import pytest
from conftest import STACKS

from halab.core import stackfile
from halab.core.config import DEBIAN_13_CHECKSUM, DEBIAN_13_IMAGE, ConfigError, parse
from halab.core.model import Hypervisor, ServiceCheck
from halab.core.stackfile import Secure

LBS = [{"name": "lb1", "address": "192.168.69.111"}, {"name": "lb2", "address": "192.168.69.112"}]


def problems(raw: dict, **kw) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(raw, **kw)
    return err.value.problems


NOBLE = "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"


def test_an_image_from_the_network_needs_its_checksum_a_local_one_may_go_without():
    assert parse({"halab:image": NOBLE, "halab:imageChecksum": "sha256:" + "a" * 64}).libvirt.image_checksum
    assert parse({"halab:image": DEBIAN_13_IMAGE}).libvirt.image_checksum == DEBIAN_13_CHECKSUM  # named: known
    assert parse({"halab:image": "/srv/images/mine.qcow2"}).libvirt.image_checksum is None
    own = {"halab:image": "/srv/mine.qcow2", "halab:imageChecksum": "sha512:" + "b" * 128}
    assert parse(own).libvirt.image_checksum == "sha512:" + "b" * 128


def test_empty_config_is_the_seed_lab():
    lab = parse({})
    assert str(lab.vip) == "192.168.69.110"
    assert [(n.name, str(n.address), n.priority) for n in lab.load_balancers] == [
        ("lb1", "192.168.69.111", 150),
        ("lb2", "192.168.69.112", 140),
    ]
    assert [(n.name, str(n.address)) for n in lab.backends] == [("www1", "192.168.69.106"), ("www2", "192.168.69.107")]
    assert [(s.name, s.port, s.balance, s.sticky, s.backend_tls) for s in lab.services] == [
        ("http", 80, "leastconn", True, False),
        ("https", 443, "leastconn", True, True),
    ]
    assert (lab.vrrp.router_id, lab.vrrp.advert_interval) == (100, 1)
    assert lab.test_clients == (ip_address("192.168.69.1"),)  # the hypervisor on the lab network
    assert lab.libvirt.hypervisors == (Hypervisor("default", "qemu:///system", None),)
    assert lab.libvirt.domain_type == "kvm" and all(n.hypervisor == "default" for n in lab.nodes)
    assert lab.libvirt.image == DEBIAN_13_IMAGE  # the release the VM lab proves (trixie)
    assert lab.libvirt.image_checksum == DEBIAN_13_CHECKSUM  # a dated build, checked before use


def test_dev_stack_file_is_the_defaults_plus_the_seeds_test_machine():
    dev = parse(stackfile.load_stack_file(str(STACKS["dev"])))
    assert dev.test_clients == (ip_address("192.168.69.1"), ip_address("192.168.69.104"))
    assert dataclasses.replace(dev, test_clients=parse({}).test_clients) == parse({})


def test_large_stack_file():
    lab = parse(stackfile.load_stack_file(str(STACKS["large"])))
    assert [n.priority for n in lab.load_balancers] == [200, 190, 130]  # given, given, derived (3rd)
    assert lab.libvirt.hypervisor("default").jump_host == "ops@hv1.example.net:22"
    smtp = lab.services[2]
    assert (smtp.port, smtp.backend_port, smtp.sticky, smtp.balance) == (2525, 8025, False, "leastconn")
    assert len(lab.backends) == 5 and lab.network.interface == "ens3"


def test_model_is_frozen():
    lab = parse({})
    with pytest.raises(AttributeError):
        lab.vip = ip_address("1.2.3.4")  # type: ignore[misc]


def test_other_namespaces_are_ignored():
    assert parse({"libvirt:uri": "x", "pulumi:template": "y"}) == parse({})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"halab:vip": "10.0.0.5"}, "halab:vip: '10.0.0.5' is outside halab:network.cidr 192.168.69.0/24"),
        ({"halab:vip": "192.168.69.0"}, "halab:vip: '192.168.69.0' is the network address of the lab subnet"),
        ({"halab:vip": "192.168.69.1"}, "halab:vip: '192.168.69.1' is the gateway"),
        ({"halab:vip": "192.168.69.255"}, "halab:vip: '192.168.69.255' is the broadcast address"),
        (
            {"halab:vip": "192.168.69.111"},
            "halab:loadBalancers[0].address: '192.168.69.111' is already used by halab:vip",
        ),
        ({"halab:vip": "not-an-ip"}, "halab:vip: 'not-an-ip' is not an IPv4 address"),
        (
            {"halab:network": {"cidr": "192.168.69.1/24"}},
            "halab:network.cidr: '192.168.69.1/24' is not an IPv4 network",
        ),
        ({"halab:network": {"mode": "bridged"}}, "halab:network.mode: 'bridged' must be nat, route"),
        (
            {"halab:network": {"gateway": "192.168.69.254"}},
            "halab:network.gateway: '192.168.69.254' is the hypervisor's first",
        ),
        ({"halab:network": {"bridge": "br0"}}, "halab:network.bridge: 'br0' needs network.mode: bridge"),
        ({"halab:network": {"colour": "blue"}}, "halab:network.colour: 'blue' is not a known key"),
        (
            {"halab:loadBalancers": LBS[:1]},
            "halab:loadBalancers: [{'name': 'lb1', 'address': '192.168.69.111'}] needs at least 2 entries",
        ),
        ({"halab:backends": []}, "halab:backends: [] needs at least 1 entry"),
        (
            {"halab:loadBalancers": [LBS[0], {"name": "lb1", "address": "192.168.69.113"}]},
            "halab:loadBalancers[1].name: 'lb1' is already used by halab:loadBalancers[0]",
        ),
        (
            {"halab:backends": [{"name": "lb1", "address": "192.168.69.120"}]},
            "halab:backends[0].name: 'lb1' is already used by halab:loadBalancers[0]",
        ),
        (
            {"halab:backends": [{"name": "www1", "address": "192.168.69.112"}]},
            "halab:backends[0].address: '192.168.69.112' is already used by halab:loadBalancers[1].address",
        ),
        (
            {"halab:backends": [{"name": "www1", "address": "192.168.69.1"}]},
            "halab:backends[0].address: '192.168.69.1' is the gateway",
        ),
        (
            {"halab:backends": [{"name": "www1", "address": "192.168.69.0"}]},
            "halab:backends[0].address: '192.168.69.0' is the network address",
        ),
        (
            {"halab:backends": [{"name": "Www_1", "address": "192.168.69.120"}]},
            "halab:backends[0].name: 'Www_1' is not a valid host name",
        ),
        (
            {"halab:loadBalancers": [{**LBS[0], "priority": 100}, {**LBS[1], "priority": 100}]},
            "halab:loadBalancers[lb2].priority: 100 equals the priority of lb1",
        ),
        (
            {"halab:loadBalancers": [{**LBS[0], "priority": 255}, LBS[1]]},
            "halab:loadBalancers[0].priority: 255 is out of range 1-254",
        ),
        ({"halab:vrrp": {"routerId": 0}}, "halab:vrrp.routerId: 0 is out of range 1-255"),
        ({"halab:vrrp": {"routerId": 256}}, "halab:vrrp.routerId: 256 is out of range 1-255"),
        ({"halab:vrrp": {"routerId": "100"}}, "halab:vrrp.routerId: '100' must be an integer"),
        (
            {"halab:vrrp": {"lvsSyncDaemonInterface": "eth0"}},
            "halab:vrrp.lvsSyncDaemonInterface: 'eth0' is not a known key",
        ),
        ({"halab:services": [{"name": "http", "port": 0}]}, "halab:services[0].port: 0 is out of range 1-65535"),
        (
            {"halab:services": [{"name": "http", "port": 70000}]},
            "halab:services[0].port: 70000 is out of range 1-65535",
        ),
        (
            {"halab:services": [{"name": "http", "port": 80, "backendPort": 0}]},
            "halab:services[0].backendPort: 0 is out of range",
        ),
        (
            {"halab:services": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]},
            "halab:services[1].port: 80 is already used by another service",
        ),
        (
            {"halab:services": [{"name": "a", "port": 80, "balance": "random-ish"}]},
            "halab:services[0].balance: 'random-ish' must be one of",
        ),
        (
            {"halab:services": [{"name": "a", "port": 80, "sticky": "yes"}]},
            "halab:services[0].sticky: 'yes' must be true or false",
        ),
        ({"halab:services": []}, "halab:services: [] must be a non-empty list"),
        (
            {"halab:services": [{"name": "a", "port": 25, "protocol": "smtp"}]},
            "halab:services[0].protocol: 'smtp' must be http",
        ),
        (
            {"halab:services": [{"name": "a", "port": 25, "protocol": "tcp", "backendTls": True}]},
            "halab:services[0].backendTls: True needs protocol: http",
        ),
        (
            {"halab:services": [{"name": "a", "port": 25, "protocol": "tcp", "transparency": "forwarded-for"}]},
            "halab:services[0].transparency: 'forwarded-for' needs protocol: http without backendTls",
        ),
        (
            {"halab:services": [{"name": "a", "port": 443, "transparency": "forwarded-for"}]},
            "halab:services[0].transparency: 'forwarded-for' needs protocol: http without backendTls",
        ),
        (
            {"halab:services": [{"name": "a", "port": 80, "transparency": "magic"}]},
            "halab:services[0].transparency: 'magic' must be one of",
        ),
        (
            {
                "halab:services": [
                    {"name": "a", "port": 80},
                    {"name": "b", "port": 81, "backendPort": 80, "protocol": "tcp"},
                ]
            },
            "halab:services[1].backendPort: 80 is shared with service a, served differently",
        ),
        ({"halab:testClients": ["10.1.1.1"]}, "halab:testClients[0]: '10.1.1.1' is outside halab:network.cidr"),
        (
            {"halab:testClients": ["192.168.69.106"]},
            "halab:testClients[0]: '192.168.69.106' is already used by halab:backends[0].address",
        ),
        ({"halab:domainType": "xen"}, "halab:domainType: 'xen' must be kvm or qemu"),
        ({"halab:libvirtUri": "lxc:///"}, "halab:libvirtUri: 'lxc:///' must be qemu:///system"),
        ({"halab:image": "noble.img"}, "halab:image: 'noble.img' must be an http(s) URL or an absolute path"),
        ({"halab:image": NOBLE}, f"halab:image: '{NOBLE}' needs halab:imageChecksum (sha512:HEX or sha256:HEX"),
        ({"halab:imageChecksum": "md5:0123"}, "halab:imageChecksum: 'md5:0123' must be sha512:<128 hex digits>"),
        ({"halab:imageChecksum": "sha256:" + "A" * 64}, "halab:imageChecksum: 'sha256:AAAA"),
        ({"halab:ssh": {"user": "root"}}, "halab:ssh.user: 'root' must not be root"),
        ({"halab:ssh": {"publicKey": "hello"}}, "halab:ssh.publicKey: 'hello' is not an OpenSSH public key"),
        ({"halab:vm": {"memoryMiB": 128}}, "halab:vm.memoryMiB: 128 is out of range 512-262144"),
        (
            {"halab:vm": {"loadBalancers": {"memoryMiB": 100}}},
            "halab:vm.loadBalancers.memoryMiB: 100 is out of range 512-262144",
        ),
        ({"halab:vm": {"backends": {"cpus": 2}}}, "halab:vm.backends.cpus: 2 is not a known key"),
        ({"halab:vm": {"backends": None}}, "halab:vm.backends: None must be a mapping"),
        ({"halab:healthCheck": {"interval": "soon"}}, "halab:healthCheck.interval: 'soon' is not a valid duration"),
        ({"halab:colour": "blue"}, "halab:colour: 'blue' is not a known key"),
        (
            {"halab:haproxy": {"statsPort": 80}},
            "halab:haproxy.statsPort: 80 is already used by halab:services[http].port",
        ),
        (
            {"halab:haproxy": {"peersPort": 443}},
            "halab:haproxy.peersPort: 443 is already used by halab:services[https]",
        ),
        ({"halab:vrrpAuthPass": "plain"}, "halab:vrrpAuthPass: '<plain text>' must be stored encrypted"),
    ],
)
def test_bad_input_names_the_key_and_the_value(raw, expected):
    found = problems(raw)
    assert any(expected in p for p in found), f"{expected!r} not in {found}"


def test_every_problem_is_reported_at_once():
    found = problems(
        {
            "halab:vip": "10.0.0.5",
            "halab:vrrp": {"routerId": 0},
            "halab:services": [{"name": "http", "port": 99999}],
            "halab:loadBalancers": LBS[:1],
            "halab:unknown": 1,
        }
    )
    assert len(found) == 5, found
    assert str(ConfigError(found)).startswith("invalid stack config:\n  - ")


def test_secrets_are_checked_only_when_the_driver_supplies_them():
    assert parse({"halab:vrrpAuthPass": Secure()})  # the stack file holds it encrypted: fine
    assert parse({"halab:vrrpAuthPass": {"secure": "v1:abc"}})  # as read from the YAML
    assert problems({}, secrets={}) == [
        "halab:statsPassword: None is required for the stats page: pulumi config set --secret "
        "halab:statsPassword ... (scripts/setup does it), or halab:haproxy.statsPort: 0",
        "halab:vrrpAuthPass: None is required: pulumi config set --secret halab:vrrpAuthPass <1-8 characters> "
        "(scripts/setup does it)",
    ]
    stats = {"statsPassword": "long-enough-secret"}
    (p,) = problems({"halab:vrrpAuthPass": Secure()}, secrets={"vrrpAuthPass": "far-too-long", **stats})
    assert "far-too-long" not in p and "(it has 12)" in p
    (p,) = problems({}, secrets={"vrrpAuthPass": "s3cret", "statsPassword": "short"})
    assert p.startswith("halab:statsPassword: '<secret>' must be 12 or more") and "short" not in p
    assert parse({"halab:vrrpAuthPass": Secure()}, secrets={"vrrpAuthPass": "s3cret", **stats})
    # no stats page, no stats password needed
    assert parse({"halab:haproxy": {"statsPort": 0}}, secrets={"vrrpAuthPass": "s3cret"})


def test_health_check_interval_in_seconds():
    for text, seconds in (("2s", 2), ("500ms", 0.5), ("750", 0.75), ("1m", 60)):
        assert parse({"halab:healthCheck": {"interval": text}}).health_check.interval_seconds == seconds


def test_vrrp_defaults_and_options():
    v = parse({}).vrrp
    assert (v.version, v.advert_interval, v.unicast, v.preempt) == (2, 1.0, True, True)
    # the safety net: never quicker than 10 s to time out; both checks forgive a reload as long
    assert (v.check_interval, v.check_timeout, v.reload_grace) == (2, 10, 10)
    v = parse({"halab:vrrp": {"version": 3, "advertInterval": 0.25, "mode": "multicast", "preempt": False}}).vrrp
    assert (v.version, v.advert_text, v.unicast, v.preempt) == (3, "0.25", False, False)
    assert (v.check_interval, v.check_timeout, v.reload_grace) == (2, 10, 10)
    slow = parse({"halab:vrrp": {"advertInterval": 5}}).vrrp  # longer where VRRP is more patient
    assert (slow.check_timeout, slow.reload_grace) == (16, 16)
    # VRRPv3 has no authentication: its password is not required
    assert parse({"halab:vrrp": {"version": 3, "advertInterval": 0.2}}, secrets={"statsPassword": "long-enough-secret"})


def test_the_handoff_drain_is_a_bounded_whole_number_of_seconds():
    assert parse({}).vrrp.handoff_drain_seconds == 300
    assert parse({"halab:vrrp": {"handoffDrainSeconds": 0}}).vrrp.second_chance_window == 30
    for bad in (-1, 3601, 1.5, "5m", True):
        found = problems({"halab:vrrp": {"handoffDrainSeconds": bad}})
        assert len(found) == 1 and found[0].startswith(f"halab:vrrp.handoffDrainSeconds: {bad!r} "), found


def test_ssh_key_pair_comes_whole():
    assert "needs its private key" in problems({"halab:ssh": {"publicKey": "ssh-ed25519 AAAA x"}})[0]
    assert "needs its public key" in problems({"halab:sshPrivateKey": Secure()})[0]
    lab = parse({"halab:ssh": {"publicKey": "ssh-ed25519 AAAA x"}, "halab:sshPrivateKey": Secure()})
    assert lab.ssh.public_key == "ssh-ed25519 AAAA x"


def test_remote_uri_gives_a_jump_host():
    assert parse({"halab:libvirtUri": "qemu+ssh://me@hv/system"}).libvirt.hypervisors[0].jump_host == "me@hv:22"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        # the provider dials with the URI's user only: none fails (and the jump would be root)
        ("qemu+ssh://hv/system", "names no SSH user"),
        # the provider always uses the system daemon: a session URI would be another libvirt
        ("qemu:///session", "the provider uses the system daemon"),
        ("qemu+ssh://me@hv/session", "the provider uses the system daemon"),
        # v0.8.1 dials "[hv:2222]:2222" (upstream #1116): pulumi up would fail inside the provider
        ("qemu+ssh://me@hv:2222/system", "names SSH port 2222, which terraform-provider-libvirt v0.8.1"),
    ],
)
def test_uris_the_provider_cannot_use_are_refused(uri, why):
    (problem,) = problems({"halab:libvirtUri": uri})
    assert "libvirtUri" in problem and uri in problem and why in problem


TWO_HOSTS = {
    "halab:libvirtHosts": {"hv1": "qemu+ssh://ops@hv1/system", "hv2": "qemu+ssh://ops@hv2/system"},
    "halab:network": {"mode": "bridge", "bridge": "br-lab", "gateway": "192.168.69.254"},
    "halab:loadBalancers": [{**LBS[0], "hypervisor": "hv1"}, {**LBS[1], "hypervisor": "hv2"}],
    "halab:backends": [
        {"name": "www1", "address": "192.168.69.106", "hypervisor": "hv1"},
        {"name": "www2", "address": "192.168.69.107", "hypervisor": "hv2"},
    ],
}


def test_nodes_spread_over_two_hypervisors():
    lab = parse(TWO_HOSTS)
    assert [h.name for h in lab.libvirt.hypervisors] == ["hv1", "hv2"]
    assert [(n.name, n.hypervisor) for n in lab.nodes] == [
        ("lb1", "hv1"),
        ("lb2", "hv2"),
        ("www1", "hv1"),
        ("www2", "hv2"),
    ]
    assert (lab.network.mode, lab.network.bridge, str(lab.network.gateway)) == ("bridge", "br-lab", "192.168.69.254")
    assert lab.test_clients == ()  # the bridged LAN's router is not a test client


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"halab:loadBalancers": [{**LBS[0], "hypervisor": "hv1"}, {**LBS[1], "hypervisor": "hv1"}]},
            "halab:loadBalancers: ['lb1@hv1', 'lb2@hv1'] share hypervisor(s) hv1 while another has none",
        ),
        ({"halab:network": {"mode": "nat"}}, "halab:network.mode: 'nat' must be bridge when nodes span hypervisors"),
        (
            {"halab:network": {"mode": "bridge", "gateway": "192.168.69.254"}},
            "halab:network.bridge: None must be a non-empty string",
        ),
        (
            {"halab:network": {"mode": "bridge", "bridge": "br-lab"}},
            "halab:network.gateway: None is required in bridge mode",
        ),
        (
            {"halab:backends": [{"name": "www1", "address": "192.168.69.106", "hypervisor": "hv9"}]},
            "halab:backends[www1].hypervisor: 'hv9' is not a hypervisor of halab:libvirtHosts (hv1, hv2)",
        ),
        (
            {"halab:backends": [{"name": "www1", "address": "192.168.69.106"}]},
            "halab:backends[www1].hypervisor: None is required with halab:libvirtHosts",
        ),
        (
            {"halab:libvirtUri": "qemu:///system"},
            "halab:libvirtUri: 'qemu:///system' conflicts with halab:libvirtHosts",
        ),
        ({"halab:libvirtHosts": {"hv1": "xen:///"}}, "halab:libvirtHosts.hv1: 'xen:///' must be qemu:///system"),
    ],
)
def test_bad_placement_is_named(change, expected):
    found = problems({**TWO_HOSTS, **change})
    assert any(expected in p for p in found), f"{expected!r} not in {found}"


def test_priorities_derive_from_order_and_never_collide_silently():
    lbs = [{"name": f"lb{i}", "address": f"192.168.69.{120 + i}"} for i in range(4)]
    lab = parse({"halab:loadBalancers": lbs})
    assert [n.priority for n in lab.load_balancers] == [150, 140, 130, 120]
    assert (
        "equals the priority of lb0" in problems({"halab:loadBalancers": [{**lbs[0]}, {**lbs[1], "priority": 150}]})[0]
    )


def test_macs_are_unique_per_address():
    lab = parse(stackfile.load_stack_file(str(STACKS["large"])))
    macs = [n.mac for n in lab.nodes]
    assert len(set(macs)) == len(macs) and all(m.startswith("52:54:00:") for m in macs)


def test_service_checks_default_to_what_the_lab_serves_and_are_validated():
    lab = parse({"halab:services": [{"name": "web", "port": 80}, {"name": "smtp", "port": 25, "protocol": "tcp"}]})
    assert [s.check for s in lab.services] == [
        ServiceCheck("http", "/", 200),
        ServiceCheck("banner", expect="220"),
    ]
    lab = parse(
        {
            "halab:services": [
                {"name": "web", "port": 80, "check": {"path": "/healthz", "status": 204}},
                {"name": "imap", "port": 143, "protocol": "tcp", "check": {"expect": "* OK"}},
                {"name": "mail", "port": 25, "protocol": "tcp", "check": {"type": "smtp"}},
                {"name": "raw", "port": 9000, "protocol": "tcp", "check": {"type": "connect"}},
            ]
        }
    )
    assert [s.check for s in lab.services] == [
        ServiceCheck("http", "/healthz", 204),
        ServiceCheck("banner", expect="* OK"),
        ServiceCheck("smtp"),
        ServiceCheck("connect"),
    ]
    for check, key, value in (
        ({"type": "smtp"}, "check.type", "'smtp'"),  # an HTTP service
        ({"path": "healthz"}, "check.path", "'healthz'"),
        ({"path": "/a b"}, "check.path", "'/a b'"),
        ({"status": 700}, "check.status", "700"),
        ({"expect": "x"}, "check.expect", "'x'"),  # an HTTP check has no banner
        ({"timeout": 1}, "check.timeout", "1"),
        ("/", "check", "'/'"),
    ):
        (msg,) = problems({"halab:services": [{"name": "web", "port": 80, "check": check}]})
        assert msg.startswith(f"halab:services[0].{key}: {value} "), msg
    for check, key, value in (
        ({"expect": 'say "hi"'}, "check.expect", "'say \"hi\"'"),
        ({"expect": ""}, "check.expect", "''"),
        ({"type": "http"}, "check.type", "'http'"),
        ({"type": "smtp", "expect": "220"}, "check.expect", "'220'"),
    ):
        (msg,) = problems({"halab:services": [{"name": "mail", "port": 25, "protocol": "tcp", "check": check}]})
        assert msg.startswith(f"halab:services[0].{key}: {value} "), msg


def test_service_pools_name_the_stack_backends():
    """services[].backends: each service's own backends; by default every backend."""
    raw = stackfile.load_stack_file(str(STACKS["pools"]))
    lab = parse(raw)
    pools = {s.name: [b.name for b in lab.pool(s)] for s in lab.services}
    assert pools == {
        "http": ["web-1", "web-2"],
        "https": ["web-1", "web-2"],
        "smtp": ["mail-1", "mail-2"],
        "imap": ["mail-1", "mail-2"],  # in the stack's order, whatever the list's
        "status": ["web-1", "web-2", "mail-1", "mail-2"],
    }
    assert [s.name for s in lab.served_by(lab.node("mail-1"))] == ["smtp", "imap", "status"]
    services = raw["halab:services"]

    def with_pool(pool) -> list[str]:
        return problems({**raw, "halab:services": [{**services[0], "backends": pool}, *services[1:]]})

    assert with_pool([]) == [
        "halab:services[0].backends: [] must be a non-empty list of backend names (web-1, web-2, mail-1, mail-2)"
    ]
    assert with_pool("web-1") == [
        "halab:services[0].backends: 'web-1' must be a non-empty list of backend names (web-1, web-2, mail-1, mail-2)"
    ]
    assert with_pool(["web-1", "www9"]) == [
        "halab:services[0].backends[1]: 'www9' is not a backend of this stack (backends: web-1, web-2, mail-1, mail-2)"
    ]
    assert with_pool(["web-1", "web-1"]) == ["halab:services[0].backends[1]: 'web-1' is listed twice"]
