"""The VM path for real, on this host's libvirt, through Pulumi's Automation API.

A throw-away stack (its own state directory, passphrase, libvirt network name and subnet) is
brought up; `scripts/verify` passes on the VMs, drills included; a backend is added while
requests flow through the VIP: only each load balancer's `haproxy` step re-runs, the new
backend's resources are created, nothing else changes and no request fails; `destroy` leaves no
domain, volume or network of the stack in libvirt.

Runs in the README's test command where the Pulumi CLI, libvirt (qemu:///system) and KVM are
present; otherwise it is skipped with a reason naming what is missing. It takes a while (the
guest image is downloaded once into the pool; set HALAB_TEST_IMAGE to a local cloud image to
skip the download).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading

import pytest
from conftest import ROOT

from halab.verify import probes
from halab.verify.ssh import Endpoint, SshTransport

URI = "qemu:///system"
NETWORK = f"halabit{secrets.token_hex(2)}"  # names every domain, volume and the network
CIDR = "192.168.237"  # an unusual subnet: a user's own lab keeps 192.168.69.0/24


def missing() -> list[str]:
    out = []
    if shutil.which("pulumi") is None:
        out.append("the Pulumi CLI")
    if shutil.which("virsh") is None:
        out.append("libvirt's virsh (libvirt-clients)")
    elif subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, check=False).returncode != 0:
        out.append(f"a reachable libvirt at {URI} (libvirtd running, and access to it)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        out.append("KVM (/dev/kvm)")
    if not any(shutil.which(t) for t in ("mkisofs", "genisoimage", "xorriso")):
        out.append("mkisofs (genisoimage), for the cloud-init disks")
    return out


MISSING = missing()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")


def value(v: object, secret: bool = False):
    """A config value as `pulumi config set` stores it: structured values as JSON text."""
    from pulumi import automation as auto

    return auto.ConfigValue(v if isinstance(v, str) else json.dumps(v), secret=secret)


def node(name: str, last_octet: int) -> dict:
    return {"name": name, "address": f"{CIDR}.{last_octet}"}


CONFIG = {
    "halab:network": {"name": NETWORK, "cidr": f"{CIDR}.0/24"},
    "halab:vip": f"{CIDR}.110",
    "halab:loadBalancers": [node("lb1", 111), node("lb2", 112)],
    "halab:backends": [node("www1", 106), node("www2", 107)],
    "halab:testClients": [f"{CIDR}.1"],  # this host, the network's gateway
    "halab:vm": {"vcpu": 1, "memoryMiB": 768, "diskGiB": 6},
}
if os.environ.get("HALAB_TEST_IMAGE"):
    CONFIG["halab:image"] = os.environ["HALAB_TEST_IMAGE"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from pulumi import automation as auto

    state = tmp_path_factory.mktemp("pulumi-state")
    env = {"PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24)}
    name = f"it-{NETWORK}"
    s = auto.create_stack(stack_name=name, work_dir=str(ROOT), opts=auto.LocalWorkspaceOptions(env_vars=env))
    try:
        s.set_all_config({k: value(v) for k, v in CONFIG.items()})
        s.set_config("halab:vrrpAuthPass", value(secrets.token_hex(4), secret=True))
        s.set_config("halab:statsPassword", value(secrets.token_urlsafe(18), secret=True))
        yield s, env
    finally:
        try:
            s.destroy(on_output=print)
        finally:
            s.workspace.remove_stack(name)
            (ROOT / f"Pulumi.{name}.yaml").unlink(missing_ok=True)
            left = leftovers()
            assert not left, f"left in libvirt after destroy: {left}"


def leftovers() -> list[str]:
    def names(*args: str) -> list[str]:
        p = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=False)
        return [w for w in p.stdout.split() if w.startswith(NETWORK)]

    return names("list", "--all", "--name") + names("net-list", "--all", "--name") + names("vol-list", "default")


def run_verify(stack_name: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(ROOT / "scripts/verify"), "--stack", stack_name, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    print(p.stdout, p.stderr)
    return p


def test_up_verify_change_destroy(stack):
    s, env = stack
    up = s.up(on_output=print)
    assert up.outputs["vip"].value == f"{CIDR}.110"
    assert up.summary.result == "succeeded"

    full = run_verify(s.name, env)
    assert full.returncode == 0 and "0 failed" in full.stdout, full.stdout + full.stderr

    # Add a backend under load: requests from this host (the gateway, a test client) all along.
    transport = SshTransport({"_client": Endpoint(None)})
    url = f"http://{CIDR}.110/"
    samples: list[probes.Sample] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():  # one sampler runs 120 s at most: chain them
            sm = probes.sample(transport, "_client", url, [f"{CIDR}.1"], "--interval", "0.05", "--timeout", "3")
            while sm.proc.poll() is None and not done.is_set():
                done.wait(0.5)
            samples.extend(sm.stop())

    ops: dict[str, str] = {}

    def on_event(e) -> None:
        if e.resource_pre_event is not None:
            m = e.resource_pre_event.metadata
            ops[m.urn] = m.op.value

    s.set_config("halab:backends", value([*CONFIG["halab:backends"], node("www3", 108)]))
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        s.up(on_output=print, on_event=on_event)
    finally:
        done.set()
        loader.join(timeout=30)
        transport.close()
    changed = {urn.rsplit("::", 1)[1]: op for urn, op in ops.items() if op not in ("same", "read")}
    updated = sorted(n for n, op in changed.items() if op != "create")
    created = sorted(n for n, op in changed.items() if op == "create")
    assert updated == ["halab-lb1-haproxy", "halab-lb2-haproxy"], changed
    assert created and all("www3" in n for n in created), created
    failed = [x for x in samples if not x.ok]
    assert samples and not failed, f"{len(failed)} of {len(samples)} requests failed while www3 was added"
    seen = {x.backend for x in samples if x.ok}
    assert seen <= {"www1", "www2", "www3"}

    ro = run_verify(s.name, env, "--read-only")  # www3 included: every server UP on every LB
    assert ro.returncode == 0 and "6/6 UP" in ro.stdout, ro.stdout
