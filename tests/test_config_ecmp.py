"""`halab:mode: ecmp` and `halab:bgp`: the keys validated, and every combination that cannot work
refused with one problem naming its key (issue #24)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from halab.core.config import ConfigError, parse
from halab.core.model import Bfd
from halab.core.stackfile import Secure

ECMP = {"halab:mode": "ecmp", "halab:vip": "10.23.0.10"}


def problems(raw: dict, **kw) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(raw, **kw)
    return err.value.problems


def test_ecmp_defaults_peer_with_the_gateway_over_ebgp_with_bfd():
    lab = parse(ECMP)
    assert lab.mode == "ecmp" and lab.bgp is not None
    assert (lab.bgp.asn, lab.bgp.peer_asn, lab.bgp.peer) == (65010, 65000, ip_address("192.168.69.1"))
    assert lab.bgp.bfd == Bfd(300, 3) and lab.bgp.bfd.detect_seconds == 0.9
    assert [n.priority for n in lab.load_balancers] == [None, None]  # no VRRP election
    assert parse({}).mode == "active-standby" and parse({}).bgp is None


def test_ecmp_keys_are_read():
    lab = parse(
        {
            **ECMP,
            "halab:bgp": {"asn": 4200000001, "peerAsn": 64512, "peer": "192.168.69.2", "bfd": {"intervalMs": 100}},
        }
    )
    assert lab.bgp is not None
    assert (lab.bgp.asn, lab.bgp.peer_asn, str(lab.bgp.peer)) == (4200000001, 64512, "192.168.69.2")
    assert lab.bgp.bfd == Bfd(100, 3)  # the multiplier from the default
    assert parse({**ECMP, "halab:bgp": {"bfd": False}}).bgp.bfd is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"halab:mode": "active-active"}, "halab:mode: 'active-active' must be active-standby or ecmp"),
        ({"halab:mode": "ecmp"}, "halab:vip: '192.168.69.110' is inside halab:network.cidr 192.168.69.0/24"),
        (
            {**ECMP, "halab:vrrp": {"advertInterval": 1}},
            "halab:vrrp: {'advertInterval': 1} is for halab:mode: active-standby",
        ),
        (
            {
                **ECMP,
                "halab:loadBalancers": [
                    {"name": "lb1", "address": "192.168.69.111", "priority": 200},
                    {"name": "lb2", "address": "192.168.69.112"},
                ],
            },
            "halab:loadBalancers[lb1].priority: 200 is a VRRP priority",
        ),
        ({"halab:bgp": {"asn": 65001}}, "halab:bgp: {'asn': 65001} is for halab:mode: ecmp"),
        ({**ECMP, "halab:bgp": {"asn": 0}}, "halab:bgp.asn: 0 is out of range 1-4294967294"),
        ({**ECMP, "halab:bgp": {"asn": 23456}}, "halab:bgp.asn: 23456 is AS_TRANS"),
        ({**ECMP, "halab:bgp": {"peerAsn": 65010}}, "halab:bgp.peerAsn: 65010 equals halab:bgp.asn"),
        ({**ECMP, "halab:bgp": {"peer": "10.9.9.9"}}, "halab:bgp.peer: '10.9.9.9' is outside halab:network.cidr"),
        (
            {**ECMP, "halab:bgp": {"peer": "192.168.69.111"}},
            "halab:bgp.peer: '192.168.69.111' is already used by halab:loadBalancers[0].address",
        ),
        ({**ECMP, "halab:bgp": {"peer": "router"}}, "halab:bgp.peer: 'router' is not an IPv4 address"),
        ({**ECMP, "halab:bgp": {"bfd": {"intervalMs": 5}}}, "halab:bgp.bfd.intervalMs: 5 is out of range 10-60000"),
        ({**ECMP, "halab:bgp": {"bfd": {"multiplier": 1}}}, "halab:bgp.bfd.multiplier: 1 is out of range 2-255"),
        ({**ECMP, "halab:bgp": {"bfd": {"every": 1}}}, "halab:bgp.bfd.every: 1 is not a known key"),
        ({**ECMP, "halab:bgp": {"as": 1}}, "halab:bgp.as: 1 is not a known key"),
        (
            {**ECMP, "halab:vip": "192.168.70.1", "halab:testClients": ["192.168.70.1"]},
            "halab:testClients[0]: '192.168.70.1' is outside",
        ),
    ],
)
def test_bad_or_mismatched_keys_are_named(raw, expected):
    found = problems(raw)
    assert any(x.startswith(expected) for x in found), found


def test_secrets_belong_to_their_mode():
    assert any(
        x.startswith("halab:vrrpAuthPass: '<secret>' is for halab:mode: active-standby")
        for x in problems({**ECMP, "halab:vrrpAuthPass": Secure()})
    )
    assert any(
        x.startswith("halab:bgpPassword: '<secret>' is for halab:mode: ecmp")
        for x in problems({"halab:bgpPassword": Secure()})
    )
    # ecmp needs no VRRP password; a BGP password is checked, its value never shown
    ok = {"statsPassword": "stats-secret-123"}
    assert parse({**ECMP, "halab:bgpPassword": Secure()}, secrets={**ok, "bgpPassword": "k3y"}).mode == "ecmp"
    bad = problems({**ECMP, "halab:bgpPassword": Secure()}, secrets={**ok, "bgpPassword": "two words"})
    assert bad == ["halab:bgpPassword: '<secret>' must be 1-80 printable characters without spaces (it has 9)"]


def test_the_vm_lab_refuses_ecmp_mode_before_anything_exists():
    """Its router is not built yet: the VM lab says so, and where ecmp mode runs, first."""
    from conftest import STACKS

    from halab.drivers.vmlab import lab as vmlab

    with pytest.raises(ConfigError) as err:
        vmlab.stack_config(str(STACKS["ecmp"]), "/nonexistent.qcow2", "qemu", {"statsPassword": "x" * 12})
    (problem,) = err.value.problems
    assert problem.startswith("halab:mode 'ecmp': the VM lab does not run it yet") and "netns-lab up" in problem
