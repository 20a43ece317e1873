"""The VM path for real: `scripts/vm-lab` puts the program's own resources on a libvirt inside
the lab's namespaces (real Debian guests under QEMU, cloud-init, systemd, SSH), then proves it.

One lab for the module, in the order a user meets it: up, up again, verify (drills included),
reboot, a third backend added under load, a guest deleted out of band, a roll-out of the load
balancers, down; then an `up` interrupted halfway and a `down` after it. About 55 minutes on 2
cores with TCG: up 10 to 12 (the image built or not), verify 11, reboot 5, a third backend 7,
a rebuilt guest 4, the roll-out 15 (docs/testing.md).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
import yaml
from conftest import ROOT, VERIFY_ROWS, assert_rows, require_lab, row_names

from halab.core import config, plan, stackfile
from halab.drivers.vmlab import hypervisor, image, lab
from halab.verify import drills, lab_access, probes, reload, traffic, vrrp
from halab.verify.rows import table

CONFIG = ROOT / "Pulumi.dev.yaml"
PREFIX = "halab"
VM_LAB = ROOT / "scripts" / "vm-lab"

pytestmark = pytest.mark.timeout(1500)


def vm_lab(*args: str, config=CONFIG, timeout: float = 1400) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [str(VM_LAB), *args, "--config", str(config)], capture_output=True, text=True, check=False, timeout=timeout
    )
    print(p.stdout[-6000:], p.stderr[-6000:])
    return p


FIRST: list = []  # the first request per service and client, sent as `up` returned


def changed(output: str) -> dict[str, str]:
    """What `up` did to each resource, from its progress lines (`+ NAME: ACTIONd in ...`)."""
    return dict(re.findall(r"\+ (\S+): (create|update|replace)d in", output))


def virsh(*args: str) -> str:
    hv = hypervisor.Hypervisor.attach(PREFIX)
    assert hv is not None
    return hv.run(["virsh", "-q", "-c", "qemu:///system", *args]).stdout


@pytest.fixture(scope="module")
def vmlab():
    require_lab(lab.preflight())
    vm_lab("down")
    p = vm_lab("up")
    assert p.returncode == 0, p.stderr
    with lab_access.VmSession(str(CONFIG)) as s:  # no wait: `up` ends when the lab serves
        FIRST.extend(traffic.check_services(s.transport, s.ctx))
    yield p.stdout
    assert vm_lab("down").returncode == 0
    assert lab.leftovers(PREFIX) == []


def test_up_brings_up_four_guests_from_the_programs_resources(vmlab):
    made = changed(vmlab)
    model = config.parse(stackfile.load_stack_file(str(CONFIG)))
    steps = [f"halab-{n.name}-{s}" for n in model.nodes for s in plan.step_names(model, n)]
    steps += [f"halab-{n.name}-{s.name}" for n in model.load_balancers for s in plan.serving_steps(model, n)]
    # the roll-out's gates: on each load balancer, its hand-off and a drain per backend
    steps += [f"halab-{n.name}-{s.name}" for n in model.load_balancers for s in plan.gate_steps(model, n)]
    # 8 steps on each load balancer (its library first), its wait until it serves and 3 gates;
    # 7 on each backend
    assert len(steps) == 38 and all(made.get(s) == "create" for s in steps), made
    assert sorted(virsh("list", "--name").split()) == ["halab-lb1", "halab-lb2", "halab-www1", "halab-www2"]
    with lab_access.VmSession(str(CONFIG)) as s:
        for node in s.model.nodes:
            # address, user and key from the program's cloud-init: the SSH login itself, as halab
            out = s.transport.run(
                node.name, "hostname; id -un; ip -4 -o addr show dev eth0; systemctl is-system-running || true"
            ).stdout
            assert out.startswith(f"{node.name}\nroot\n"), out  # sudo -n as the stack's user
            assert f"inet {node.address}/24" in out
            assert s.transport.run(node.name, ["sudo", "-u", "halab", "id", "-un"]).stdout.strip() == "halab"
            # cloud-init grew the root partition and its filesystem to the VM's disk (vm.diskGiB),
            # past the image's own 3 GiB, as a cloud image's growpart and resizefs do
            size = int(s.transport.run(node.name, ["df", "-B1", "--output=size", "/"]).stdout.split()[-1])
            assert size > (model.vm.of(node).disk_gib - 1) * 2**30 > image.SIZE_GIB * 2**30, (node.name, size)
    assert "module errors" not in vmlab, vmlab  # cloud-init's: each would be a warning of `ready`
    # the image came as a download would: fetched into the cache by the program's local Command,
    # checked against its sha512 (halab:imageChecksum), and the base volume made from that file
    assert made.get("halab-image-fetch") == "create", made
    assert "(sha512 checked)" in lab.log_file(str(CONFIG)).read_text()  # its output, in up's full log


def test_a_first_request_right_after_up_is_served(vmlab):
    """`up` ended with each load balancer's serving step (every pool server UP): a request per
    service from each client, sent as it returned, is served, the client's address seen."""
    assert FIRST and all(r.ok for r in FIRST), table(FIRST)


def test_up_again_changes_nothing(vmlab):
    p = vm_lab("up")
    assert p.returncode == 0, p.stderr
    assert changed(p.stdout) == {} and "0 resources changed" in p.stdout


def test_verify_passes_on_the_guests_drills_included(vmlab):
    p = vm_lab("verify", timeout=1400)
    assert p.returncode == 0, p.stdout
    # every row of the namespace lab's dev stack, by name, the hang drills and the planned
    # hand-off (40 sessions on emulated guests) included
    assert f"\n{VERIFY_ROWS['dev']} passed, 0 failed, 0 skipped" in p.stdout, p.stdout
    assert_rows(row_names(p.stdout), config.parse(stackfile.load_stack_file(str(CONFIG))), "dev")


def test_reboot_and_a_networkd_restart_leave_every_rule_route_and_daemon(vmlab):
    p = vm_lab("reboot", timeout=1400)
    assert p.returncode == 0, p.stdout
    assert "reboot: 5 passed, 0 failed" in p.stdout  # each node back, the VIP, networkd restarted on each
    # then verify --read-only: its two rows that would change the lab say SKIP
    assert re.search(r"\n\d+ passed, 0 failed, 2 skipped", p.stdout), p.stdout


def with_backend(tmp_path, name: str, address: str):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["config"]["halab:backends"].append({"name": name, "address": address})
    f = tmp_path / "Pulumi.dev3.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


def test_a_third_backend_runs_only_the_haproxy_steps_and_its_own_resources(vmlab, tmp_path):
    """Requirement 4: under steady load, adding a backend (a new guest booting beside the others,
    both haproxy steps reloading) fails no request and moves no VIP. It once did, on these
    emulated guests: keepalived's safety-net script timed out while the steps' daemon-reload and
    `systemctl enable` starved the guest's one vCPU, and the VIP flapped (issue #11).

    "Moves no VIP", read from each load balancer's VRRP log over the window: the master logs no
    change, and no other node becomes MASTER. A backup's brief FAULT (its haproxy slow to answer
    its watcher during the reload, on a starved emulated vCPU) moves nothing and is printed, not
    failed; the same on the master would move the VIP, and fails."""
    three = with_backend(tmp_path, "www3", "192.168.69.108")
    with lab_access.VmSession(str(CONFIG)) as s:
        url = s.model.url(s.model.services[0])
        holders = probes.holders(s.transport, s.model)
        assert len(holders) == 1, holders
        master = holders[0]
        before = vrrp.state_changes(s.transport, s.model)
        # the load balancers reload: a request may wait that out, as in verify's reload row
        rate = ["--interval", str(s.ctx.request_interval), "--timeout", str(reload.reload_patience(s.ctx))]
        sampler = probes.sample(
            s.transport, s.ctx.client, url, list(s.ctx.client_sources[:4]), *rate, "--duration", "1200"
        )
        time.sleep(2)
        p = vm_lab("up", config=three)
        samples = sampler.stop()
        logged = vrrp.states_since(s.transport, s.model, before)
        why = {n: _keepalived_says(s.transport, n) for n, states in logged.items() if states}
    assert p.returncode == 0, p.stderr
    made = changed(p.stdout)
    drains = {"halab-lb1-drain-www3", "halab-lb2-drain-www3"}  # its gates on the load balancers
    assert all(made.get(n) == "create" for n in drains), made
    # each hand-off gate's bundle names every pool server: updated in place (create runs again),
    # never replaced, so its delete does not run (components/rollout.py)
    handoffs = {"halab-lb1-handoff", "halab-lb2-handoff"}
    assert all(made.get(n) == "update" for n in handoffs), made
    others = {n for n in made if not n.startswith("halab-www3-")} - drains - handoffs
    # and each load balancer's wait until it serves, as after any step ran again
    assert others == {"halab-lb1-haproxy", "halab-lb2-haproxy", "halab-lb1-serving", "halab-lb2-serving"}, made
    assert {made[n] for n in others} == {"replace"}  # their triggers changed: the step runs again
    assert len(samples) > 50
    failed = [x for x in samples if not x.ok]
    print(f"third backend: {len(failed)} of {len(samples)} requests failed; VRRP changes {logged}")
    assert failed == [], (
        f"{len(failed)} of {len(samples)} requests failed while www3 was added, "
        f"from {[(round(x.start - failed[0].start, 1), x.why) for x in failed]}; VRRP changes {logged}"
    )
    moved = {n: states for n, states in logged.items() if states and (n == master or "MASTER" in states)}
    assert moved == {}, f"the VIP moved while a backend was added ({master} held it): {logged}; keepalived said {why}"


# Not in the README's command (CI): a guest's boot under TCG, about 5 minutes, that CI's 90 do not
# leave room for beside the roll-out. Run by hand with HALAB_VM_LAB_REBUILD=1 (docs/testing.md).
@pytest.mark.skipif(
    os.environ.get("HALAB_VM_LAB_REBUILD") != "1", reason="a guest rebuilt: HALAB_VM_LAB_REBUILD=1 (5 more minutes)"
)
def test_a_guest_deleted_out_of_band_is_rebuilt_with_every_step(vmlab, tmp_path):
    three = with_backend(tmp_path, "www3", "192.168.69.108")
    root = next(v for v in virsh("vol-list", "default").split() if v.startswith("halab-www3-root"))
    virsh("destroy", "halab-www3")
    virsh("undefine", "halab-www3")
    virsh("vol-delete", "--pool", "default", root)
    p = vm_lab("up", config=three)
    assert p.returncode == 0, p.stderr
    made = changed(p.stdout)
    assert "gone from libvirt (refresh)" in p.stdout
    assert made.get("halab-www3-vm-domain") == "create" and made.get("halab-www3-vm-root") == "create", made
    steps = [n for n in made if n.startswith("halab-www3-") and not n.startswith("halab-www3-vm")]
    names = ("library-copy", "library", "ready", "packages", "sysctl", "gateway", "web", "tcp")
    assert sorted(steps) == sorted(f"halab-www3-{s}" for s in names)
    assert all(made[s] == "replace" for s in steps), made  # the new domain's ID is in their triggers
    # its drains too, created first: the old ones' deletes, at the end, leave the new guest in service
    assert made.get("halab-lb1-drain-www3") == made.get("halab-lb2-drain-www3") == "replace", made
    assert p.stdout.count("a newer guest") == 2, p.stdout
    assert "halab-www3" in virsh("list", "--name").split()


def _keepalived_says(transport, lb: str) -> list[str]:
    """What made a load balancer change state in the last minutes (its checks' verdicts, from
    keepalived's journal), for a failure's report: which check failed, the watcher's or the
    script's, is the question such a failure leaves."""
    cmd = ["journalctl", "-u", "keepalived", "--since", "-20min", "-o", "short-monotonic", "--no-pager"]
    try:
        out = transport.run(lb, cmd, check=False).stdout
    except subprocess.TimeoutExpired:
        return ["(no answer)"]
    keys = ("chk_haproxy", "haproxy_watch", "FAULT", "Entering", "priority")
    return [line for line in out.splitlines() if any(k in line for k in keys)][-20:]


def _haproxy_stat(transport, lb: str) -> str:
    """A load balancer's haproxy counters, for a failure's report: its absence must not hide the
    failure it was read for."""
    try:
        return drills.action(transport, lb, "haproxy-api", "show", "stat", check=False).stdout
    except subprocess.TimeoutExpired:
        return "(no answer)"


# How long a roll-out's request may wait for its answer on emulated guests: four times the 5 s
# that about one request in a thousand outlasted while a guest booted under TCG beside them.
ROLL_OUT_PATIENCE = 20.0


# Its own bound: the module's 1500 s counts the lab's `up` (about 500 s) in the first test it
# runs; the `up` below is bounded at 1500 s.
@pytest.mark.timeout(1800)
def test_a_change_that_replaces_the_load_balancers_rolls_them_out_one_at_a_time(vmlab, tmp_path):
    """Issue #22: `vm.loadBalancers.memoryMiB` changed (both load balancers' domains replaced)
    and www3 removed, in one `up`, under steady requests through the VIP from the hypervisor.
    The load balancers are replaced one at a time, the backup first, then the master, each
    handing the VIP off first; www3 is drained on each load balancer, then deleted, at the end.
    The VIP is never held by two nodes for two samples in a row, nor by none for longer than a
    takeover, and it moves exactly twice: to lb2 at lb1's hand-off, and back. The service
    never goes down: no 60 s without a successful answer (less than a guest's boot under TCG,
    so a rebuild with no VIP fails it), and no request fails. Each request may wait
    ROLL_OUT_PATIENCE for its answer: a guest booting under TCG takes one of this host's two
    cores, and the serving guests then stall for seconds (with 5 s, 10 of 11582 timed out in a
    CI run, 8 of 14584 here, none refused or reset; with 20 s, 0 of 7004 failed here, the
    slowest answer 1.0 s). Emulated guests are untimed (`ctx.timed` False): the slowest answers
    are printed, and only a refused, reset or unanswered request fails. A request in flight at a
    VIP move is kept since #23's second chance (before it, 1 or 2 were lost at the moves).

    Only the load balancers: each guest replaced costs about 6 minutes under TCG, and CI's
    90 do not hold four. The backends' turn is the same engine ordering (each waits for the
    gates before it, tests/test_rolling.py under mocks and tests/test_vm_engine.py), its drain
    gates run on real daemons in the namespace lab's roll-out test, and on these guests when
    www3 is removed here (drained on each load balancer, then deleted). About
    15 minutes: two guests boot one after the other."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["config"]["halab:vm"] = {**raw["config"].get("halab:vm", {}), "loadBalancers": {"memoryMiB": 1152}}
    rolled = tmp_path / "Pulumi.rolled.yaml"
    rolled.write_text(yaml.safe_dump(raw, sort_keys=False))
    with lab_access.VmSession(str(CONFIG)) as s:
        model, url = s.model, s.model.url(s.model.services[0])
        rate = ["--interval", str(s.ctx.request_interval), "--timeout", str(ROLL_OUT_PATIENCE)]
        sampler = probes.sample(
            s.transport, s.ctx.client, url, list(s.ctx.client_sources[:4]), *rate, "--duration", "1560"
        )
        watch = probes.HolderWatch(s.transport, model, s.ctx.holder_interval)
        time.sleep(2)
        started = time.monotonic()
        p = vm_lab("up", config=rolled, timeout=1500)
        ended = time.monotonic()
        time.sleep(2)
        samples = sampler.stop()
        watch.stop()
        # each server's connect errors, retries and redispatches: a failure's side (client or backend)
        counters = {lb.name: _haproxy_stat(s.transport, lb.name) for lb in model.load_balancers}
    failed = [x for x in samples if not x.ok]
    longest = watch.longest_without_holder(started, ended)  # from the rounds every node answered
    down = probes.no_answer_stretch(samples, started, ended)
    most = watch.most(started, ended)
    print(
        f"roll-out: {len(failed)} of {len(samples)} requests failed; most holders {most}; "
        f"longest without a holder {longest:.1f} s, without an answer {down:.1f} s; up took {ended - started:.0f} s"
    )
    # on the engine's clock (its log's `[ 816.1s]`), to read beside the log
    moves = [(round(ts - started, 1), holder) for ts, holder in watch.moves(started, ended)]
    print("VIP moved at:", moves)

    def timing(x: probes.Sample) -> tuple:  # sent at, on the engine's clock; how long; from where
        return round(x.start - started, 1), round(x.end - x.start, 1), x.source

    slowest = sorted((x for x in samples if x.ok), key=lambda x: x.end - x.start, reverse=True)[:5]
    print("slowest answers:", [timing(x) for x in slowest])
    print("failed at:", [(*timing(x), x.why) for x in failed])
    for name, text in counters.items():
        print(f"{name} haproxy stat:\n{text}")
    assert p.returncode == 0, p.stderr
    order = re.findall(r"\+ (halab-\S+)-vm-domain: replace \(", p.stdout)
    assert order == ["halab-lb2", "halab-lb1"], order
    lines = p.stdout.splitlines()

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert found, f"no {text!r} in the log; the hand-offs said: {[x for x in lines if 'handoff' in x]}"
        return found[0]

    # each guest's gates ran their deletes before it went, and it went after the previous came back
    # (the engine logs `+ X: replace (Domain)...`, then its dependents' deletes, then `replaced in`)
    assert at("+ halab-lb2-vm-domain: replace (") < at("halab-lb2-handoff: delete")
    assert at("halab-lb2-handoff: delete") < at("halab-lb2-vm-domain: replaced in")
    assert at("+ halab-lb2-handoff: created") < at("+ halab-lb1-vm-domain: replace")
    assert at("VIP answered by a peer") < at("halab-lb1-vm-domain: replaced in")
    # www3, removed: drained on each load balancer, then deleted
    assert at("halab-lb1-drain-www3: delete") < at("halab-www3-vm-domain: delete")
    assert p.stdout.count("www3 drained") == 2, p.stdout
    # the requests span the whole `up` (the sampler's own bound is longer than it)
    assert samples[0].start <= started and max(x.start for x in samples) >= ended - 5, (len(samples), started, ended)
    assert down < 60, down
    assert len(samples) > 100 and failed == [], [str(x) for x in failed[:5]]
    assert most is not None and most[1] <= 1, most
    assert longest <= 3 * model.vrrp.advert_interval + 1, longest
    # once each way: to lb2 at lb1's hand-off, back to lb1 (preempt) once it serves again
    assert [holder for _, holder in moves] == ["lb2", "lb1"], moves


def test_down_after_an_interrupted_up_leaves_nothing(vmlab):
    d = vm_lab("down")
    assert d.returncode == 0
    # `pulumi destroy` through the engine first: the gates' delete scripts ran, in the log
    assert "destroy stopped" not in d.stdout and "keepalived stopped" in d.stdout, d.stdout
    assert lab.leftovers(PREFIX) == []
    proc = subprocess.Popen([str(VM_LAB), "up", "--config", str(CONFIG)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # interrupted once the guests are being defined and booted
        if "Domain)..." in line:
            break
    time.sleep(5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert lab.leftovers(PREFIX)  # the kill left a lab behind
    assert vm_lab("down").returncode == 0
    assert lab.leftovers(PREFIX) == []
