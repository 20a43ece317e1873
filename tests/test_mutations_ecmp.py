"""Mutation tests of ecmp mode's rows (issue #24, docs/ecmp.md), as tests/test_mutations.py does
for active-standby: each breaks one thing in a copy of a rendered file, installs it through the
step that installs the original, runs the row that guards it, and asserts the row fails; the
original step then restores the nodes, and the row passes again.

Costs about 5 minutes: the ecmp lab's `up` (about 20 s), the withdrawal drill three times, the
link cut (held until the node's servers are DOWN) twice, each restored, 2400 requests for the
shares, and the sessions' drills three times (about 20 s each).

Not here: a mutation of `timers connect 2` (FRR 8.4's connect-retry is 120 s). It cannot fail
the link-cut restore row: bgpd tracks its peer's address, and a directly connected peer
reachable again starts the session at once (1.6 s without the line, as with it)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from test_mutations import _lab, _run, mutated

from halab.core.roles import router
from halab.drivers.netns import lab, topology
from halab.node.paths import PATHS
from halab.verify import backends, ecmp, ecmp_sessions, lab_access, observe, probes, traffic
from halab.verify.rows import Row


@pytest.fixture(scope="module")
def lab_ecmp() -> Iterator[topology.Topology]:
    yield from _lab("ecmp")


@contextmanager
def router_mutated(topo: topology.Topology, change: Callable[[str], str]):
    """The lab's router runs its step with its frr.conf changed; afterwards the original step."""
    (step,) = router.steps(topo.lab, lab.credentials(topo))
    files = dict(step.files)
    broken = change(files[PATHS["FRR_CONF"]])
    assert broken != files[PATHS["FRR_CONF"]], "the mutation of the router's frr.conf changed nothing"
    copy = tuple((p, broken if p == PATHS["FRR_CONF"] else c) for p, c in step.files)
    try:
        _run(topo, "_router", dataclasses.replace(step, files=copy))
        yield
    finally:
        _run(topo, "_router", step)


def _settled(topo: topology.Topology, bfd: bool = True) -> None:
    """Every session Established and announcing, every path at the router (and every BFD peer
    up, unless it was turned off), every backend UP: a reload or a mutation has settled, as the
    rows after it expect. A failed request marks a server DOWN (observe layer4) until it rises."""
    transport, ctx = lab_access.netns_context(topo)

    def ready() -> bool:
        rows = [r for r in ecmp.check_bgp(transport, ctx) if bfd or not r.check.startswith("BFD")]
        return all(r.ok for r in rows + backends.check_backends_up(transport, ctx))

    assert probes.wait_until(ready, 60, 0.5), [(r.check, r.figure) for r in ecmp.check_bgp(transport, ctx)]


def _failover_rows(topo: topology.Topology, *only: str, bound: float = 5.0) -> dict[str, Row]:
    """The ecmp drills' rows (`only` those named), each waiting `bound` seconds (verify's 20):
    a path withdrawn comes and goes within one, and a broken one is not waited for long."""
    transport, ctx = lab_access.netns_context(topo)
    ctx = dataclasses.replace(ctx, drill_bound=bound)
    return {r.check.split(":")[0]: r for r in ecmp.check_ecmp_failovers(transport, ctx, only)}


def test_with_the_vip_announced_statically_the_haproxy_killed_row_fails(lab_ecmp):
    """bgpd announces the VIP by a `network` statement, whatever haproxy does, instead of the
    connected /32 the watcher puts on lo while haproxy serves: haproxy killed, the router keeps
    sending flows to the dead node, and the row says it was never withdrawn."""
    vip = str(lab_ecmp.lab.vip)

    def static(conf: str) -> str:
        conf = conf.replace("  redistribute connected route-map halab-vip\n", f"  network {vip}/32\n")
        return re.sub(r"(\n bgp router-id [\d.]+\n)", r"\1 no bgp network import-check\n", conf)

    with mutated(lab_ecmp, "lb", "bgp", PATHS["FRR_CONF"], static):
        _settled(lab_ecmp)
        rows = _failover_rows(lab_ecmp, "haproxy killed")
    killed = next(r for k, r in rows.items() if k.startswith("haproxy killed"))
    print(killed.check, killed.figure)
    assert not killed.ok and killed.figure == "not withdrawn", killed
    _settled(lab_ecmp)
    rows = _failover_rows(lab_ecmp, "haproxy killed")
    print([(r.check, r.figure) for r in rows.values()])
    assert all(r.ok for r in rows.values()), [(r.check, r.figure) for r in rows.values()]  # restored


def test_without_bfd_the_link_cut_and_bfd_rows_fail(lab_ecmp):
    """The sessions without BFD, on both ends: a cut link is seen only when BGP's hold timer
    (9 s) runs out, far past the row's ceiling (BFD's 0.3 s and 0.2 s), and no BFD peer is up."""

    def no_bfd(conf: str) -> str:
        return re.sub(r"\n neighbor \S+ bfd profile halab", "", conf)

    transport, ctx = lab_access.netns_context(lab_ecmp)
    with router_mutated(lab_ecmp, no_bfd), mutated(lab_ecmp, "lb", "bgp", PATHS["FRR_CONF"], no_bfd):
        _settled(lab_ecmp, bfd=False)
        bfd_rows = [r for r in ecmp.check_bgp(transport, ctx) if r.check.startswith("BFD")]
        rows = _failover_rows(lab_ecmp, "link cut", bound=20)  # BGP's hold timer (9 s) within it
    cut = next(r for k, r in rows.items() if k.startswith("link cut"))
    print(cut.check, cut.figure, [(r.check, r.figure) for r in bfd_rows])
    assert bfd_rows and not any(r.ok for r in bfd_rows), bfd_rows
    assert not cut.ok and (cut.figure == "not withdrawn" or float(cut.figure.split()[0]) > 3), cut
    _settled(lab_ecmp)


def test_without_the_backends_return_path_every_request_through_the_vip_fails(lab_ecmp):
    """The backends without their return path (no load balancer's MAC marked, the router as
    every reply's gateway): a reply to a client leaves the backend from its own address to the
    router, and the client, which spoke to the VIP, resets it. The rows that send requests
    through the VIP fail: the backend never sees the client."""

    def no_return(conf: str) -> str:
        return re.sub(r'\nRETURN="[^"]*"', '\nRETURN=""', conf)

    transport, ctx = lab_access.netns_context(lab_ecmp)
    with mutated(lab_ecmp, "backend", "gateway", PATHS["ROUTES_CONF"], no_return):
        rows = traffic.check_services(transport, ctx)
    print([(r.check, r.figure) for r in rows])
    assert len(rows) == 2 * len(lab_ecmp.lab.services) and not any(r.ok for r in rows), rows
    _settled(lab_ecmp)
    rows = traffic.check_services(transport, ctx)
    assert all(r.ok for r in rows), rows  # restored


def test_with_one_path_at_the_router_the_spread_and_share_rows_fail(lab_ecmp):
    """The router keeps one path to the VIP (`maximum-paths 1`): one load balancer carries every
    flow, the others none."""
    transport, ctx = lab_access.netns_context(lab_ecmp)
    n = len(lab_ecmp.lab.load_balancers)
    with router_mutated(lab_ecmp, lambda conf: conf.replace(f"maximum-paths {n}", "maximum-paths 1")):
        spread = next(r for r in ecmp.check_bgp(transport, ctx) if r.check.startswith("the router spreads"))
        (shares,) = ecmp.check_ecmp_shares(transport, ctx)
    print(spread.figure, "|", shares.figure)
    counts = [int(n) for n in re.findall(r"\S+ (\d+)(?:,| \(even)", shares.figure)]
    assert not spread.ok and not shares.ok and max(counts) >= 0.9 * sum(counts), (spread, shares)
    _settled(lab_ecmp)
    (shares,) = ecmp.check_ecmp_shares(transport, ctx)
    assert shares.ok, shares  # restored


def test_without_an_outbound_policy_the_announcement_rows_fail(lab_ecmp):
    """A load balancer's session without its outbound route-map: FRR's eBGP default (ebgp-requires-
    policy) then sends nothing, and the router has no path to the VIP through it."""
    transport, ctx = lab_access.netns_context(lab_ecmp)

    def no_policy(conf: str) -> str:
        return re.sub(r"\n  neighbor \S+ route-map halab-vip out", "", conf)

    with mutated(lab_ecmp, "lb", "bgp", PATHS["FRR_CONF"], no_policy):
        time.sleep(3)  # the withdrawal reaches the router
        rows = [r for r in ecmp.check_bgp(transport, ctx) if not r.check.startswith("BFD")]
    print([(r.check, r.figure) for r in rows])
    assert rows and not any(r.ok for r in rows), rows
    _settled(lab_ecmp)


def test_with_another_password_at_the_router_no_session_comes_up(lab_ecmp):
    """The lab's sessions carry a TCP MD5 key (the lab's own bgpPassword): with another at the
    router, bgpd resets each session at the reload, and the kernel drops every segment of the
    next one (a bad MD5 signature). No session is Established, and nothing is announced."""
    transport, ctx = lab_access.netns_context(lab_ecmp)
    password = lab.credentials(lab_ecmp).bgp_password
    assert password, "the lab has no BGP password"

    def other(conf: str) -> str:
        return conf.replace(f" password {password}\n", " password not-the-lab-one\n")

    with router_mutated(lab_ecmp, other):
        probes.wait_until(
            lambda: not any(r.ok for r in ecmp.check_bgp(transport, ctx) if r.check.startswith("BGP")), 15, 0.5
        )
        rows = [r for r in ecmp.check_bgp(transport, ctx) if not r.check.startswith("BFD")]
    print([(r.check, r.figure) for r in rows])
    assert rows and not any(r.ok for r in rows), rows
    _settled(lab_ecmp)


def test_with_the_watcher_on_another_address_the_metrics_and_restore_rows_fail(lab_ecmp):
    """The watcher puts another address than the VIP on lo (ANNOUNCE): the VIP is never announced
    (haproxy's restart brings it back to no path), and the metric names that other address."""
    transport, ctx = lab_access.netns_context(lab_ecmp)
    vip = str(lab_ecmp.lab.vip)
    other = vip.rsplit(".", 1)[0] + ".99"
    elsewhere = lambda conf: conf.replace(f"ANNOUNCE={vip}", f"ANNOUNCE={other}")  # noqa: E731
    with mutated(lab_ecmp, "lb", "bgp", PATHS["WATCH_CONF"], elsewhere):
        (metrics,) = observe.check_metrics(transport, ctx)
        rows = _failover_rows(lab_ecmp)
    print(metrics.figure, [(r.check, r.figure) for r in rows.values()])
    assert not metrics.ok and "announced" in metrics.figure, metrics
    # every drill row: nothing to withdraw, and nothing comes back once restored
    assert len(rows) == 4 and not any(r.ok for r in rows.values()), rows
    _settled(lab_ecmp)
    (metrics,) = observe.check_metrics(transport, ctx)
    assert metrics.ok, metrics  # restored


def test_without_the_copies_to_the_peers_the_sessions_rows_fail(lab_ecmp):
    """Each load balancer's packet path with no peer to copy to (PEERS empty in tproxy.conf): a
    packet that a rehash brings to a node that does not hold its connection is dropped there.
    At the return of the killed node the router moves a third of the flows or more (hash-
    threshold), and their sessions time out; at a planned hand-off, the node's own sessions go
    to the others, and time out there."""
    transport, ctx = lab_access.netns_context(lab_ecmp)
    no_peers = lambda conf: re.sub(r'\nPEERS="[^"]*"', '\nPEERS=""', conf)  # noqa: E731
    with mutated(lab_ecmp, "lb", "tproxy", PATHS["TPROXY_CONF"], no_peers):
        killed = ecmp_sessions.killed_row(transport, ctx, without=False)
        handed = ecmp_sessions.handoff_row(transport, ctx)
    print(killed.figure, "|", handed.figure)
    assert not killed.ok and "moved by the router" in killed.figure, killed
    assert not handed.ok and "moved by the router" in handed.figure, handed
    _settled(lab_ecmp)
    killed = ecmp_sessions.killed_row(transport, ctx, without=False)
    print(killed.figure)
    assert killed.ok, killed  # restored
