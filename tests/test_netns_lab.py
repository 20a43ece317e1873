"""End to end: the dev lab and a second, larger lab (other names and subnet) run side by side
in network namespaces; `verify` proves each one's behaviour; `up` again changes nothing;
`down` leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, STACKS, VERIFY_ROWS, need_root_and

from halab import config
from halab.netns import lab, topology
from halab.verify import checks, failover, probes, traffic
from halab.verify.rows import table

LABS = ("dev", "lab3")
DAEMONS = ("haproxy", "keepalived", "apache2")


def topo_of(name: str) -> topology.Topology:
    return topology.build(config.parse(config.load_stack_file(str(STACKS[name]))))


def daemon_pids() -> set[int]:
    p = subprocess.run(["pgrep", "-x", "|".join(DAEMONS)], capture_output=True, text=True, check=False)
    return {int(x) for x in p.stdout.split()}


@pytest.fixture(scope="module")
def labs():
    need_root_and(*lab.COMMANDS)
    missing = lab.preflight()
    if missing:
        pytest.skip(f"this host cannot run the lab: {missing}")
    topos = {name: topo_of(name) for name in LABS}
    before = daemon_pids()
    logs: dict[str, list[str]] = {name: [] for name in LABS}
    try:
        for name, t in topos.items():
            lab.up(t, log=logs[name].append)
        yield topos, before, logs
    finally:
        for t in topos.values():
            lab.down(t, log=lambda _: None)


@pytest.mark.parametrize("name", LABS)
def test_verify_passes(labs, name):
    topos, *_ = labs
    transport, site = lab.site(topos[name])
    rows = checks.verify(transport, site)
    shown = table(rows)
    print(f"\n{name}:\n{shown}")
    assert all(r.ok for r in rows), f"{shown}\n\n{lab.logs(topos[name])}"
    assert not any(r.skipped for r in rows), shown  # both labs have something for every check
    # every claimed row is there: a check that silently returns none fails here (README's counts)
    assert len(rows) == VERIFY_ROWS[name], shown
    # every row the issue asks for is there
    text = shown.lower()
    for claim in (
        "exactly one load balancer holds the vip",
        "vrrp adverts",
        "spread over every backend",
        "haproxy killed",
        "haproxy hung",
        "keepalived killed",
        "link cut",
        "stopped: out of rotation",
        "hung: out of rotation",
        "back in rotation",
        "vrrp from a non-peer",
        "state change is logged",
        "stats page on every load balancer",
        "haproxy reloads under load",
        "persistence survives failover",
    ):
        assert claim in text, claim
    # no split brain at any sampled instant of any drill
    assert text.count("most holders at once: ") == 8 and not re.search(r"most holders at once: [2-9]", text), shown
    preempt = topos[name].lab.vrrp.preempt
    assert text.count("takes the vip back (preemption)" if preempt else "stays backup (nopreempt)") == 4
    for svc in topos[name].lab.services:
        assert f"{svc.name} (:{svc.port}) from the outside client" in shown
        assert f"{svc.name} (:{svc.port}) from the on-subnet client" in shown


def test_the_hung_haproxy_row_fails_without_the_watcher(labs):
    """Mutation: with the 0.1 s watcher stopped on the master, only keepalived's safety-net
    script (every 2 s, two misses) sees a hung haproxy. The VIP still moves, at 2.95 s at the
    earliest, past the row's ceiling (2.07 s): the row fails, so it proves the fast path."""
    topos, *_ = labs
    transport, site = lab.site(topos["dev"])
    (master,) = probes.holders(transport, site.lab)
    probes.drill(transport, master, "stop", "halab-haproxy-watch")
    try:
        fault, restore = failover.faults(transport, site.lab)["haproxy hung"]
        failed, restored = failover.failover_drill(
            transport, site, "haproxy hung", fault, restore, failover.hang_ceiling(site)
        )
    finally:
        probes.drill(transport, master, "start", "halab-haproxy-watch")
    print(failed.figure)
    assert not failed.ok and "VIP on lb2" in failed.figure, failed
    assert restored.ok, restored  # the node itself is fine: resumed, it takes the VIP back


def test_the_two_labs_are_separate(labs):
    topos, *_ = labs
    dev, lab3 = (lab.nodes(topos[n]) for n in LABS)
    assert "10.77.0.10/32" not in dev["lb1"].run("ip -4 -o addr").stdout
    # a node sees only its own processes: one haproxy master and its worker, not every lab's
    assert dev["lb1"].run("pgrep -c -x haproxy").stdout.strip() == "2"
    assert lab3["lb-a"].run("pgrep -c -x keepalived").stdout.strip() == "2"
    # no lab address leaked into the host's own namespace
    host = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert "192.168.69." not in host and "10.77.0." not in host and "198.51.100." not in host


def test_no_secret_in_any_output(labs):
    """Step output, the up log and the verify table never show the VRRP or stats password."""
    topos, _, logs = labs
    for name, t in topos.items():
        creds = lab.credentials(t)
        transport, site = lab.site(t)
        text = "\n".join(logs[name]) + table(traffic.check_stats_pages(transport, site))
        for secret in (creds.vrrp_auth_pass, creds.stats_password):
            assert secret not in text
        assert oct(os.stat(lab.state_dir(t) / "credentials.json").st_mode & 0o777) == "0o600"
        lb = lab.nodes(t)[t.lab.load_balancers[0].name]
        modes = lb.run("stat -c '%a %U' /etc/keepalived/keepalived.conf /etc/haproxy/halab-secrets.env").stdout
        assert modes.split("\n")[:2] == ["600 root", "600 root"], modes


def test_up_again_changes_nothing(labs):
    topos, *_ = labs
    log: list[str] = []
    lab.up(topos["dev"], log=log.append)
    assert log[0] == "lab halab: already up, converging"
    changed = [line for line in log[1:] if any(w in line for w in ("installed /", "starting", "reloading"))]
    assert changed == [], changed


def test_cli_refuses_bad_config(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  halab:loadBalancers: []\n")
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts/netns-lab"), "up", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and "halab:loadBalancers: [] needs at least 2 entries" in p.stderr


def test_preflight_names_what_is_missing_and_changes_nothing(tmp_path):
    need_root_and("ip")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dpkg-query", "ip"):  # the rest is missing
        os.symlink(os.path.realpath(subprocess.check_output(["which", tool], text=True).strip()), bin_dir / tool)
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts/netns-lab"), "up", "--config", str(STACKS["dev"])],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "nothing was changed" in p.stderr
    for c in ("command haproxy", "command keepalived", "command setpriv", "command curl"):
        assert c in p.stderr, c
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout == before


def test_down_leaves_nothing_behind(labs):
    topos, before, _ = labs
    for t in topos.values():
        assert lab.down(t, log=lambda _: None) == []
        assert lab.down(t, log=lambda _: None) == []  # twice is harmless
        assert lab.leftovers(t) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(t.prefix + "-" in netns for t in topos.values()), netns
    assert daemon_pids() <= before, "daemons of the labs are still running"
    assert not os.path.exists("/run/halab"), os.listdir("/run/halab")
    mounts = open("/proc/self/mountinfo").read()
    assert "halab" not in mounts
