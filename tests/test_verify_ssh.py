"""`scripts/verify --stack` end to end, over SSH, as against the VMs.

The namespace lab stands in for the VMs: every node runs sshd with the stack's admin user
(passwordless sudo, the stack's key), and the router, which holds the libvirt host's place
(the lab's gateway, 192.168.69.1), is the jump host, since this stack's libvirt URI is
`qemu+ssh://halab@192.168.69.1/system`. The verifier runs in the outside client's network
namespace, so it reaches the nodes only through that jump, as from a workstation, and its
requests come from the jump host. A stand-in `pulumi` answers `config` and `stack output` with
the stack's config and what the program exports for it (under mocks).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from ipaddress import ip_address
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, STACKS, assert_rows, cli_config, engine_config, need_root_and, require_lab, row_names

from halab.core import config, stackfile
from halab.drivers.netns import lab, topology
from halab.drivers.program_runtime import run_program
from halab.node.paths import PATHS
from halab.verify import deployed, drills, lab_access, probes, vrrp
from halab.verify.ssh import Endpoint, SshTransport

STACK = "sshlab"
NETWORK = "halabssh"  # its own namespaces: never mixed up with a dev lab
JUMP = "192.168.69.1"

SSHD = r"""set -euo pipefail
id halab >/dev/null 2>&1 || useradd --no-create-home --home-dir /nonexistent --shell /bin/bash -p '*' halab
echo 'halab ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/halab && chmod 0440 /etc/sudoers.d/halab
grep -q " $(hostname)\$" /etc/hosts || echo "127.0.1.1 $(hostname)" >>/etc/hosts
install -d -m 0755 /etc/halab-test && cat >/etc/halab-test/authorized_keys
mkdir -p /run/sshd
/usr/sbin/sshd -o AuthorizedKeysFile=/etc/halab-test/authorized_keys -o PidFile=/run/halab-test-sshd.pid \
  -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o UsePAM=no
"""

FAKE_PULUMI = """#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PULUMI_DIR"] + "/calls", "a") as f:
    f.write(" ".join(args) + "\\n")
if args[:1] == ["config"] and "--stack" in args and "--show-secrets" in args:
    print(open(os.environ["FAKE_PULUMI_DIR"] + "/config.json").read())
elif args[:2] == ["stack", "output"] and "--show-secrets" in args:
    print(open(os.environ["FAKE_PULUMI_DIR"] + "/outputs.json").read())
else:
    sys.exit("fake pulumi: unexpected " + " ".join(args))
"""


def stack_raw() -> dict:
    raw = stackfile.load_stack_file(str(STACKS["dev"]))
    net = dict(raw["halab:network"])
    net["name"] = NETWORK
    return {**raw, "halab:network": net, "halab:libvirtUri": f"qemu+ssh://halab@{JUMP}/system"}


@pytest.fixture(scope="module")
def sshlab(tmp_path_factory):
    need_root_and(*lab.COMMANDS, "ssh", "sshd", "sudo", "ssh-keygen", "useradd")
    require_lab(lab.preflight())
    tmp = tmp_path_factory.mktemp("sshlab")
    raw = stack_raw()
    (tmp / "Pulumi.sshlab.yaml").write_text(yaml.safe_dump({"config": raw}))
    topo = topology.build(config.parse(raw))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
    try:
        lab.up(topo, log=lambda _: None)
        nodes = lab.nodes(topo)
        pub = (tmp / "key.pub").read_text()
        for name in [n.name for n in topo.lab.nodes] + ["_router"]:
            nodes[name].run(SSHD, input=pub)
        creds = lab.credentials(topo)
        # what `pulumi up` exports for this config, with the key the nodes accept
        cfg, secret = engine_config(raw, vrrpAuthPass=creds.vrrp_auth_pass, statsPassword=creds.stats_password)
        outputs = run_program(cfg, secret).outputs
        outputs["ssh_private_key"] = (tmp / "key").read_text()
        (tmp / "outputs.json").write_text(json.dumps(outputs))
        (tmp / "config.json").write_text(cli_config(cfg, secret))
        (tmp / "bin").mkdir()
        (tmp / "bin" / "pulumi").write_text(FAKE_PULUMI)
        (tmp / "bin" / "pulumi").chmod(0o755)
        yield topo, tmp
    finally:
        lab.down(topo, log=lambda _: None)


def verifier(topo, tmp: Path, *args: str, netns: str | None = None, stack_dir: Path | None = None) -> subprocess.Popen:
    """scripts/verify in the outside client's network namespace, with the stand-in CLI."""
    env = {**os.environ, "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}", "FAKE_PULUMI_DIR": str(stack_dir or tmp)}
    cmd = ["ip", "netns", "exec", netns or topo.client.netns, sys.executable, str(ROOT / "scripts/verify")]
    cmd += ["--stack", STACK, "--jump-key", str(tmp / "key"), *args]
    # Ctrl-C reaches it as from a terminal: a suite started in the background of a shell without
    # job control inherits SIGINT ignored, and so would the verifier (Python keeps it ignored)
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(p: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    print(out, err)
    return p.returncode, out, err


def test_verify_over_ssh_passes_every_check(sshlab):
    topo, tmp = sshlab
    rc, out, err = finish(verifier(topo, tmp))
    assert rc == 0, out + err + lab.logs(topo)
    table = out[out.index("check ") :]
    assert "0 failed, 0 skipped" in out
    creds = lab.credentials(topo)  # read by the verifier (the stats password), never printed
    assert creds.stats_password not in out + err and creds.vrrp_auth_pass not in out + err
    # the same rows as the namespace lab, by name: one verifier
    assert_rows(row_names(out), topo.lab, "dev")
    # requests came from the jump host (the libvirt host's place): from outside and on the subnet
    assert re.search(r"from the outside client 198\.51\.100\.1: .* saw 198\.51\.100\.1$", table, re.M), table
    assert re.search(rf"from the on-subnet client {JUMP}: .* saw {JUMP}$", table, re.M), table
    calls = (tmp / "calls").read_text()
    assert f"config --json --show-secrets --stack {STACK}" in calls
    assert f"stack output --json --show-secrets --stack {STACK}" in calls


def test_read_only_changes_nothing(sshlab):
    topo, tmp = sshlab
    nodes = lab.nodes(topo)

    def state() -> dict[str, str]:
        probe = f"cat {PATHS['HAPROXY_PIDFILE']} {PATHS['KEEPALIVED_PIDFILE']}; ip -4 -o addr show; iptables -w -S"
        return {n.name: nodes[n.name].run(probe).stdout for n in topo.lab.load_balancers}

    transport = lab_access.netns_context(topo)[0]

    def stick_entries() -> dict[str, set[str]]:
        """Every load balancer's stick-table entries: (table, client key, server), expiry aside."""
        out = {}
        for lb in topo.lab.load_balancers:
            entries = set()
            for svc in topo.lab.services:
                text = drills.action(transport, lb.name, "haproxy-api", "show", "table", f"bk_{svc.name}").stdout
                entries |= {f"{svc.name} {m[0]} {m[1]}" for m in re.findall(r"key=(\S+) .*server_id=(\d+)", text)}
            out[lb.name] = entries
        return out

    before, tables = state(), stick_entries()
    assert all(tables.values()), tables  # the full run left entries: a cleared table would show
    rc, out, err = finish(verifier(topo, tmp, "--read-only"), timeout=120)
    assert rc == 0, out + err
    assert "killed" not in out and "reloads" not in out and "non-peer" not in out
    assert "read-only: the stick table decides" in out  # sticky services: spread not forced
    assert state() == before
    assert stick_entries() == tables


def test_read_only_from_the_libvirt_host_itself(sshlab, tmp_path):
    """A local libvirt (qemu:///system): no jump, the nodes straight over SSH, and the requests
    from this machine, here the router's namespace (the libvirt host's place and address)."""
    topo, tmp = sshlab
    entries = json.loads((tmp / "config.json").read_text())
    del entries["halab:libvirtUri"]
    (tmp_path / "config.json").write_text(json.dumps(entries))
    (tmp_path / "outputs.json").write_text((tmp / "outputs.json").read_text())
    rc, out, err = finish(verifier(topo, tmp, "--read-only", netns=topo.router.netns, stack_dir=tmp_path), 120)
    assert rc == 0, out + err
    assert "on this machine" in out and "0 failed" in out
    assert re.search(r"from the outside client 198\.51\.100\.1: .* saw 198\.51\.100\.1$", out, re.M), out


def test_ctrl_c_during_a_drill_restores_the_node(sshlab):
    """SIGINT while haproxy is down on the master: the verifier starts it again before exiting."""
    topo, tmp = sshlab
    master = topo.lab.load_balancers[0].name
    node = lab.nodes(topo)[master]

    def alive() -> bool:  # any haproxy process (a reload keeps its master: only a kill leaves none)
        return node.run("pgrep -x haproxy", check=False).returncode == 0

    def master_pid() -> str:
        return node.run(f"cat {PATHS['HAPROXY_PIDFILE']}").stdout.strip()

    before = master_pid()
    p = verifier(topo, tmp)
    try:
        deadline = time.monotonic() + 300
        while alive() and time.monotonic() < deadline:  # the first drill kills it
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        assert not alive(), "haproxy was never killed"
        p.send_signal(signal.SIGINT)
        rc, out, err = finish(p, timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 130, out + err
    assert "interrupted" in err
    assert alive() and master_pid() != before  # restored: a new haproxy, not the one killed
    transport = lab_access.netns_context(topo)[0]  # and the VIP goes back to it (preemption)
    assert probes.wait_until(lambda: probes.holders(transport, topo.lab) == [master], 10), probes.holders(
        transport, topo.lab
    )


def test_vrrp_filter_check_fails_without_the_filter(sshlab):
    """The rogue check can fail: with the load balancers' VRRP filter flushed, the rogue's adverts
    reach keepalived and the row says so; restored, it passes."""
    topo, _ = sshlab
    transport, ctx = lab_access.netns_context(topo)
    lbs = [lb.name for lb in topo.lab.load_balancers]
    try:
        for lb in lbs:
            transport.run(lb, "iptables -w -F HALAB-VRRP")
        (row,) = vrrp.check_vrrp_filter(transport, ctx)
        dropped = dict(re.findall(r"(\S+): (\d+) dropped", row.figure))
        assert not row.ok and set(dropped.values()) == {"0"} and len(dropped) == 2, row
        assert "reached keepalived" in row.figure and ", 0 reached" not in row.figure, row
    finally:
        for lb in lbs:
            transport.run(lb, f"{PATHS['KEEPALIVED_HOOKS_BIN']} pre")
    (row,) = vrrp.check_vrrp_filter(transport, ctx)
    assert row.ok, row


def test_ssh_command_lines():
    """A node through a jump host: the stack's key for the node, yours for the jump, the node's
    address and port forwarded by the jump (%h:%p, which the outer ssh fills in), sudo on the node only."""
    jump = Endpoint.parse("me@hv.example:2222", identity="/k/jump")
    transport = SshTransport({"lb1": Endpoint("192.168.69.111", "halab", 22, "/k/stack", jump, sudo=True)})
    try:
        argv = transport.argv("lb1", ["ip", "-4", "addr"])
        assert argv[-2:] == ["192.168.69.111", "sudo -n -- ip -4 addr"]
        proxy = next(o for o in argv if o.startswith("ProxyCommand="))
        assert proxy.endswith("-W %h:%p hv.example") and "-p 2222" in proxy and "-l me" in proxy
        assert "/k/jump" in proxy and "ControlPath" not in proxy
        assert "-i" in argv and "/k/stack" in argv and f"ControlPath={transport.dir}/%C" in argv
    finally:
        transport.close()
    assert Endpoint.parse("hv") == Endpoint("hv", None, 22, None)


def test_client_sources_follow_the_return_path():
    lab_model = config.parse(stack_raw())
    gw, lan_client, other = (ip_address(a) for a in ("192.168.69.1", "192.168.69.104", "192.168.69.50"))
    outside = ip_address("10.1.2.3")
    # the libvirt host: its other addresses get replies through it; its lab address is a test client
    assert deployed.client_sources(lab_model, [outside, gw]) == (["10.1.2.3", "192.168.69.1"], "10.1.2.3", JUMP)
    # a machine on the subnet that is not the gateway: only its test-client address counts
    assert deployed.client_sources(lab_model, [outside, lan_client, other]) == (
        ["192.168.69.104"],
        None,
        "192.168.69.104",
    )


def test_stack_mismatch_is_refused(tmp_path, monkeypatch):
    """Outputs from another config (a backend moved since the last `pulumi up`): refused, named."""
    cfg, secret = engine_config(stack_raw(), vrrpAuthPass="x", statsPassword="s" * 16)
    outputs = {"vip": "192.168.69.110", "load_balancers": {"lb1": "192.168.69.111", "lb2": "192.168.69.112"},
               "backends": {"www1": "192.168.69.106", "www2": "192.168.69.108"}}  # fmt: skip
    (tmp_path / "pulumi").write_text('#!/bin/sh\ncase "$1" in config) cat "$D/c";; stack) cat "$D/o";; esac\n')
    (tmp_path / "pulumi").chmod(0o755)
    (tmp_path / "c").write_text(cli_config(cfg, secret))
    (tmp_path / "o").write_text(json.dumps(outputs))
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("D", str(tmp_path))
    with pytest.raises(deployed.StackError, match=r"differs from what is deployed.*www2.*192\.168\.69\.108"):
        deployed.load(STACK, tmp_path)


def test_a_client_source_the_client_host_lacks_is_refused(sshlab):
    topo, tmp = sshlab
    rc, out, err = finish(verifier(topo, tmp, "--client-source", "10.9.9.9"), timeout=60)
    assert rc == 2 and f"--client-source 10.9.9.9: not an address of {JUMP} (" in err, err
    assert "PASS" not in out


def test_unreachable_node_is_named(sshlab):
    """Last: it stops a node's sshd. The error names the node, its address and the jump."""
    topo, tmp = sshlab
    lab.nodes(topo)["www2"].run("pkill -x sshd")
    rc, out, err = finish(verifier(topo, tmp, "--read-only"), timeout=120)
    assert rc == 2
    assert "cannot reach these hosts over SSH" in err and "www2 (halab@192.168.69.107 via 192.168.69.1)" in err
