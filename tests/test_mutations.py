"""Mutation tests: each breaks one thing the lab relies on, in a copy of the rendered files,
installs the copy on the dev lab's nodes through the very step that installs the original
(the same bundle path as `up`), runs only the verify row that guards it, and asserts the row
fails. The original step then restores the nodes, and the row passes again where that is cheap.
A row that cannot fail proves nothing; these show that the rows catch what they claim to.

Costs about 7 minutes: the dev lab's `up` (15 s), three failover drills with the watcher gone,
the fast lab's `up` and two link cuts held until the master's servers are DOWN (about 1 minute),
a persistence drill, two planned hand-offs (about 50 s), a rogue's 5 s of adverts, and a hung
backend waited out (about 30 s); then
the pools lab's `up` and a hung banner waited out twice (about 30 s each)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import STACKS, need_root_and, require_lab

from halab.core import config, plan, stackfile
from halab.core.step import Step
from halab.drivers.netns import lab, topology
from halab.node.paths import PATHS
from halab.verify import backends, drills, failover, handoff, lab_access, probes, vrrp
from halab.verify.rows import Row


def _lab(stack: str) -> Iterator[topology.Topology]:
    need_root_and(*lab.COMMANDS)
    require_lab(lab.preflight())
    topo = topology.build(config.parse(stackfile.load_stack_file(str(STACKS[stack]))))
    try:
        lab.up(topo, log=lambda _: None)
        yield topo
    finally:
        lab.down(topo, log=lambda _: None)


@pytest.fixture(scope="module")
def dev() -> Iterator[topology.Topology]:
    yield from _lab("dev")


@pytest.fixture(scope="module")
def fast() -> Iterator[topology.Topology]:
    """The fast stack as shipped (examples/Pulumi.fast.yaml): 0.05 s adverts, so a backup takes
    the VIP 0.15 s after it hears no better master, quicker than checks rise (2 x 0.5 s)."""
    yield from _lab("fast")


@pytest.fixture(scope="module")
def pools() -> Iterator[topology.Topology]:
    """The pools stack: TCP services checked with smtpchk (smtp) and by the banner (imap)."""
    yield from _lab("pools")


def _run(topo: topology.Topology, host: str, step: Step) -> None:
    p = lab.nodes(topo)[host].run_bundle(step.bundle(), check=False)
    assert p.returncode == 0, f"{host}/{step.name}: {p.stdout}{p.stderr}"


@contextmanager
def mutated(topo: topology.Topology, role: str, step_name: str, path: str, change: Callable[[str], str]):
    """Every node of `role` runs its step `step_name` with the file `path` changed; afterwards,
    whatever happened, the original step puts the node back."""
    creds = lab.credentials(topo)
    originals: dict[str, Step] = {}
    try:
        for node in topo.lab.load_balancers if role == "lb" else topo.lab.backends:
            (step,) = (s for s in plan.host_steps(topo.lab, node, creds) if s.name == step_name)
            files = dict(step.files)
            broken = change(files[path])
            assert broken != files[path], f"the mutation of {path} changed nothing"
            originals[node.name] = step
            copy = tuple((p, broken if p == path else c) for p, c in step.files)
            _run(topo, node.name, dataclasses.replace(step, files=copy))
        yield
    finally:
        for host, step in originals.items():
            _run(topo, host, step)


def _master_settled(topo: topology.Topology) -> str:
    """The VIP on the preferred master again (the dev stack preempts), as verify expects."""
    transport, ctx = lab_access.netns_context(topo)
    preferred = max(topo.lab.load_balancers, key=lambda lb: lb.priority or 0).name
    assert probes.wait_until(lambda: probes.holders(transport, ctx.lab) == [preferred], 20, 0.2), probes.holders(
        transport, ctx.lab
    )
    return preferred


def _haproxy_killed(topo: topology.Topology) -> Row:
    transport, ctx = lab_access.netns_context(topo)
    fault, restore = drills.catalogue(transport, ctx.lab)["haproxy killed"]
    ceiling = failover.detection_ceilings(ctx)["haproxy killed"]
    row, _ = failover.failover_rows(transport, ctx, "haproxy killed", fault, restore, ceiling)
    return row


def test_without_the_watcher_reference_the_haproxy_killed_row_fails(dev):
    """keepalived.conf without its `track_file` (the 0.1 s watcher): only the safety-net script
    (every 2 s, two misses) sees haproxy die. The VIP still moves, but past the row's ceiling
    (0.90 s on this stack): the row fails, in each of its three trials."""
    _master_settled(dev)

    def no_watcher(conf: str) -> str:
        return re.sub(r"\n        haproxy_watch weight 0", "", conf)

    with mutated(dev, "lb", "keepalived", PATHS["KEEPALIVED_CONF"], no_watcher):
        row = _haproxy_killed(dev)
    print(row.figure)
    assert not row.ok and "VIP on lb2" in row.figure and "median" in row.figure, row
    _master_settled(dev)
    row = _haproxy_killed(dev)
    assert row.ok, row  # restored: the same drill passes


def _link_cut(topo: topology.Topology) -> tuple[Row, Row]:
    transport, ctx = lab_access.netns_context(topo)
    fault, restore = drills.catalogue(transport, ctx.lab)["link cut"]
    ceiling = failover.detection_ceilings(ctx).get("link cut")
    failed, restored = failover.failover_rows(transport, ctx, "link cut", fault, restore, ceiling)
    return failed, restored


def test_without_the_serving_track_the_link_cut_restore_row_fails(fast):
    """keepalived.conf without its haproxy_serving track: the master back from a link cut, its
    servers DOWN until their checks rise (the cut outlasts them: drills.outage_hold), takes the
    VIP back within the master-down interval and fails the requests until they do; the restore
    row fails, naming them. With the track, the same drill's restore fails none: the peer
    keeps the VIP until the master serves again. On the fast stack: on the dev stack, the
    master-down interval (3.4 s) outlasts the checks' rise (2 x 2 s, the first at once), and
    hides the fault."""
    _master_settled(fast)

    def no_serving(conf: str) -> str:
        return re.sub(r"\n        haproxy_serving weight -\d+", "", conf)

    with mutated(fast, "lb", "keepalived", PATHS["KEEPALIVED_CONF"], no_serving):
        _, restored = _link_cut(fast)
    print(restored.figure)
    assert not restored.ok and re.search(r"s to the first success, [1-9]\d* failed", restored.figure), restored
    _master_settled(fast)
    _, restored = _link_cut(fast)
    print(restored.figure)
    assert restored.ok and ", 0 failed" in restored.figure, restored


def test_with_the_watcher_stopped_the_haproxy_hung_row_fails(dev):
    """The watcher's process stopped on the master (its reference still there): a hung haproxy
    is seen by the safety net only, 2.95 s at the earliest, past the row's ceiling (1.80 s)."""
    master = _master_settled(dev)
    transport, ctx = lab_access.netns_context(dev)
    drills.action(transport, master, "stop", "halab-haproxy-watch")
    try:
        fault, restore = drills.catalogue(transport, ctx.lab)["haproxy hung"]
        ceiling = failover.detection_ceilings(ctx)["haproxy hung"]
        failed, restored = failover.failover_rows(transport, ctx, "haproxy hung", fault, restore, ceiling)
    finally:
        drills.action(transport, master, "start", "halab-haproxy-watch")
    print(failed.figure)
    assert not failed.ok and "VIP on lb2" in failed.figure, failed
    assert restored.ok, restored  # the node itself is fine: resumed, it takes the VIP back


def test_without_peers_the_persistence_row_fails(dev):
    """Stick tables not replicated (no `peers` on them): after the VIP moves, the new master's
    table is empty, and the persistence row fails on that, not on a chance of the balancing."""
    _master_settled(dev)
    transport, ctx = lab_access.netns_context(dev)

    def no_peers(cfg: str) -> str:
        return cfg.replace(" peers halab\n", "\n")

    with mutated(dev, "lb", "haproxy", PATHS["HAPROXY_CFG"], no_peers):
        for svc in ctx.lab.services:  # tables emptied as a new deployment's are
            for lb in ctx.lab.load_balancers:
                drills.action(transport, lb.name, "haproxy-api", "clear", "table", f"bk_{svc.name}")
        (row,) = failover.check_persistence_across_failover(transport, ctx)
    print(row.figure)
    # moved, and the new master knew none of the clients (whether its own balancing happened to
    # give some of them their old backend or not: leastconn over two servers often does)
    known, total = map(int, re.search(r"(\d+)/(\d+) known to the new master", row.figure).groups())
    assert not row.ok and known == 0 < total and "VIP moved lb1 -> lb2" in row.figure, row
    _master_settled(dev)


def test_without_the_second_chance_rule_the_planned_handoff_row_fails(dev):
    """keepalived without its virtual_rules: the new master delivers the old master's packets to
    itself, which resets them. The row fails naming the resets; restored, it passes again.

    Between the two, the client's sockets are destroyed on both load balancers (`ss -K`): the
    reset sessions are still open there (a client reset by another node says nothing to the one
    that held its connection), and one whose address and port a new session reuses would take
    that session's packets (docs/handoff.md, "Limits"). Costs about 50 s."""
    _master_settled(dev)
    transport, ctx = lab_access.netns_context(dev)

    def no_rule(conf: str) -> str:
        return re.sub(r"    virtual_rules \{\n[^}]*\}\n", "", conf)

    with mutated(dev, "lb", "keepalived", PATHS["KEEPALIVED_CONF"], no_rule):
        (row,) = handoff.check_planned_handoff(transport, ctx)
    print(row.figure)
    resets = re.search(r"lb1 -> lb2: (\d+)/200 kept[^;]* lost: answer: ConnectionResetError x(\d+)", row.figure)
    # resets, nearly all: a request caught at the move may instead time out (1 of 200 seen once)
    assert not row.ok and resets and 200 - int(resets[1]) >= int(resets[2]) >= 0.9 * (200 - int(resets[1])) > 0, (
        row.figure
    )
    # and it names where the first lost session's 4-tuple was: lb1's socket, before the move
    assert re.search(r"its sockets: before the hand-off lb1: ESTAB \S+ \S+ \S+:80 ", row.figure), row.figure
    client = ctx.client_sources[0]
    for lb in ctx.lab.load_balancers:
        transport.run(lb.name, ["ss", "-K", "-tan", f"( dst {client} or src {client} )"])
    _master_settled(dev)
    (row,) = handoff.check_planned_handoff(transport, ctx)
    assert row.ok, row.figure


def test_with_a_rogue_among_the_peers_the_vrrp_filter_row_fails(dev):
    """The filter's peer list (vrrp.conf, read by halab-keepalived-hooks) with the rogue's
    address in it: its adverts pass the filter, and the row says none were dropped."""
    _master_settled(dev)
    transport, ctx = lab_access.netns_context(dev)
    rogue = str(ctx.lab.node(ctx.rogue).address)

    def rogue_peer(conf: str) -> str:
        return re.sub(r'^PEERS="', f'PEERS="{rogue} ', conf, flags=re.M)

    with mutated(dev, "lb", "keepalived", PATHS["VRRP_CONF"], rogue_peer):
        (row,) = vrrp.check_vrrp_filter(transport, ctx)
    print(row.figure)
    dropped = dict(re.findall(r"(\S+): (\d+) dropped", row.figure))
    assert not row.ok and dropped == {"lb1": "0", "lb2": "0"}, row  # "10 dropped" would not do
    _master_settled(dev)
    (row,) = vrrp.check_vrrp_filter(transport, ctx)
    assert row.ok, row


def connect_only(service: str) -> Callable[[str], str]:
    """haproxy.cfg with the service's check reduced to a TCP connect (its check lines removed)."""

    def change(cfg: str) -> str:
        head, sep, rest = cfg.partition(f"backend bk_{service}\n")
        body, nxt, tail = rest.partition("\nfrontend ")
        body = re.sub(r"    (# Healthy:.*|option (httpchk|smtpchk|tcp-check).*|(http|tcp)-check .*)\n", "", body)
        return head + sep + body + nxt + tail

    return change


def test_with_a_connect_only_check_the_hung_backend_row_fails(dev):
    """The HTTP service's check reduced to a TCP connect: the kernel still accepts connections for
    a hung Apache, so the server stays UP and clients stuck to it fail: the row fails."""
    transport, ctx = lab_access.netns_context(dev)
    svc = next(s for s in ctx.lab.services if s.protocol == "http")
    with mutated(dev, "lb", "haproxy", PATHS["HAPROXY_CFG"], connect_only(svc.name)):
        hung, _ = backends.backend_fault(transport, ctx, svc, "hung")
    print(hung.figure)
    assert not hung.ok and hung.figure.startswith("still in rotation after"), hung


@pytest.mark.parametrize("service", ["smtp", "imap"])
def test_with_a_connect_only_check_the_banner_hung_row_fails(pools, service):
    """smtp is checked with `option smtpchk`, imap by the banner's greeting (tcp-check expect);
    either reduced to a TCP connect, its server stays UP while the banner hangs (the kernel still
    accepts), and the row fails naming that service alone: the other one's check saw the hang."""
    transport, ctx = lab_access.netns_context(pools)
    victim, services = backends.banner_hung_services(ctx.lab)
    assert victim == "mail-1" and [s.name for s in services] == ["smtp", "imap"]
    with mutated(pools, "lb", "haproxy", PATHS["HAPROXY_CFG"], connect_only(service)):
        hung, resumed = backends.banner_hang(transport, ctx)
    print(hung.figure)
    assert not hung.ok and hung.figure.startswith("still in rotation after"), hung
    assert hung.figure.split(": ", 1)[1] == f"{service} on lb1, {service} on lb2", hung
    assert resumed.ok, resumed
