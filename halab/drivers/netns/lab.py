"""The namespace lab: the lab's architecture on this host, from the same model, rendered files
and step bundles as the VMs get.

`up` builds the namespaces and wiring (what libvirt and cloud-init do for VMs), then runs each
node's steps exactly as the Pulumi path does over SSH. `down` removes everything by name, so it
also cleans up after a failed or interrupted `up`. No address, route or link is ever added to
the host's own network namespace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from halab.core import plan, render
from halab.core.model import Credentials
from halab.core.roles import router
from halab.drivers import host_packages, progress
from halab.drivers.netns.node import SCRATCH_ROOT, NsNode, destroy_netns, make_tree, remove_tree, veth
from halab.drivers.netns.topology import Topology
from halab.node.paths import PATHS

STATE_ROOT = Path("/run/halab/labs")
# What the host must have: the daemons and tools the step scripts and the verifier run.
COMMANDS = (
    "ip",
    "unshare",
    "nsenter",
    "setpriv",
    "iptables",
    "sysctl",
    "haproxy",
    "keepalived",
    "apache2ctl",
    "curl",
    "ping",
    "ss",
    "pkill",
    "python3",
)
# Every package the lab needs on the host (the steps' own among them: without one, a step would
# try apt, which has no network in a node); `scripts/setup --lab` installs exactly these.
PACKAGES = host_packages.debian_packages("lab")

Log = Callable[[str], None]


class LabError(RuntimeError):
    pass


def preflight() -> list[str]:
    """Everything this host lacks for the lab, each named; empty when it can run."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, mounts): run it with sudo")
    missing += [f"command {c}" for c in COMMANDS if shutil.which(c) is None]
    packages = host_packages.not_installed(PACKAGES)
    if packages:
        missing.append(f"packages {' '.join(packages)}: `scripts/setup --lab` installs them, as root")
    if missing:
        return missing
    return _kernel_features()


def _kernel_features() -> list[str]:
    """Tries each kernel feature in a throw-away namespace (removed at once)."""
    probe = f"halab-probe-{os.getpid()}-{threading.get_ident() % 100000}"
    tries = {
        "veth pairs": "ip link add p0 type veth peer name p1",
        "bridges": "ip link add b0 type bridge",
        "TPROXY socket match (xt_socket)": "iptables -w -t mangle -A PREROUTING -p tcp -m socket --transparent "
        "-j ACCEPT",
        "policy routing (fwmark rules)": "ip rule add fwmark 1 lookup 100",
        "local routes in a table": "ip route add local 0.0.0.0/0 dev lo table 100",
        "overlay and tmpfs mounts": "unshare -m sh -c 'mount -t tmpfs t /mnt && mkdir /mnt/u /mnt/w && "
        "mount -t overlay o -o lowerdir=/etc,upperdir=/mnt/u,workdir=/mnt/w /mnt/u'",
    }
    missing = []
    subprocess.run(["ip", "netns", "add", probe], check=True)
    try:
        for feature, cmd in tries.items():
            p = subprocess.run(
                ["ip", "netns", "exec", probe, "sh", "-c", cmd], capture_output=True, text=True, check=False
            )
            if p.returncode != 0:
                missing.append(f"kernel feature: {feature} ({p.stderr.strip()[:120]})")
    finally:
        subprocess.run(["ip", "netns", "del", probe], check=False)
    return missing


def state_dir(topo: Topology) -> Path:
    return STATE_ROOT / topo.prefix


def log_file(topo: Topology) -> Path:
    """Every line of `up`, timestamped (halab.drivers.progress): in the lab's state, so `down` removes it."""
    return state_dir(topo) / "up.log"


def credentials(topo: Topology) -> Credentials:
    """The lab's passwords: made at the first `up`, kept for the next ones, gone at `down`."""
    f = state_dir(topo) / "credentials.json"
    if not f.exists():
        make_tree(f.parent)
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(dataclasses.asdict(Credentials.generate()), out)
    return Credentials(**json.loads(f.read_text()))


def nodes(topo: Topology) -> dict[str, NsNode]:
    """The running nodes of the lab, by logical name; raises if the lab is not (fully) up."""
    out = {}
    for h in topo.hosts:
        n = NsNode.attach(h.netns)
        if n is None:
            raise LabError(f"lab {topo.prefix} is not up ({h.netns} is missing): run `up` first")
        out[h.name] = n
    return out


def _remembered(topo: Topology) -> set[str]:
    f = state_dir(topo) / "namespaces"
    return set(f.read_text().split()) if f.exists() else set()


def is_up(topo: Topology) -> bool:
    """Every node of this topology runs, and no other node of an earlier one is left."""
    current = {h.netns for h in topo.hosts}
    return _remembered(topo) == current and all(NsNode.attach(n) is not None for n in current)


def up(topo: Topology, log: Log = print) -> None:
    """Builds the lab (or converges a running one) and configures every node by its steps."""
    missing = preflight()
    if missing:
        raise LabError("this host cannot run the lab (nothing was changed):\n" + "\n".join(f"  - {m}" for m in missing))
    if is_up(topo):
        log(f"lab {topo.prefix}: already up, converging")
        running = nodes(topo)
    else:
        down(topo, log=lambda _: None)  # leftovers of a failed `up`, or of another topology
        log(f"lab {topo.prefix}: creating {len(topo.hosts)} namespaces")
        try:
            _remember(topo)
            running = _create(topo)
        except BaseException:
            down(topo, log=lambda _: None)
            raise
    configure(topo, running, log)


def _remember(topo: Topology) -> None:
    """Records the namespaces before making them: a later `down` removes them even if the
    config has changed since (a backend removed from it still had a namespace)."""
    f = state_dir(topo) / "namespaces"
    make_tree(f.parent)
    f.write_text("\n".join(sorted(_remembered(topo) | {h.netns for h in topo.hosts})) + "\n")


def _create(topo: Topology) -> dict[str, NsNode]:
    lab = topo.lab
    running = {h.name: NsNode.create(h.netns, hostname=h.name.lstrip("_")) for h in topo.hosts}
    sw = running["_switch"]
    sw.run("ip link add br0 type bridge && ip link set br0 up")
    prefix = lab.network.prefix
    gw = lab.network.gateway
    for i, h in enumerate(topo.subnet_members):
        port = f"p{i}"
        veth(running[h.name], lab.network.interface, sw, port)
        sw.run(["ip", "link", "set", port, "master", "br0"])
        node = running[h.name]
        if h.node is not None:  # its MAC, as its VM's NIC has it (ecmp's return path names them)
            node.run(["ip", "link", "set", "dev", lab.network.interface, "address", h.node.mac])
        node.run(["ip", "addr", "add", f"{h.address}/{prefix}", "dev", lab.network.interface])
        if h.role != "router":
            # what cloud-init's network-config gives a VM: its address, the hypervisor as gateway
            metric = str(render.HYPERVISOR_ROUTE_METRIC)
            node.run(["ip", "route", "add", "default", "via", str(gw), "dev", lab.network.interface, "metric", metric])
    router, client = running["_router"], running["_client"]
    veth(router, "out0", client, "eth0")
    cidr = topo.client_cidr.prefixlen
    router.run(["ip", "addr", "add", f"{topo.client_gateway}/{cidr}", "dev", "out0"])
    router.run("sysctl -qw net.ipv4.ip_forward=1")
    for a in topo.client_addresses:
        client.run(["ip", "addr", "add", f"{a}/{cidr}", "dev", "eth0"])
    client.run(["ip", "route", "add", "default", "via", str(topo.client_gateway)])
    return running


def configure(topo: Topology, running: dict[str, NsNode], log: Log = print) -> None:
    """Every node's steps, in the order the Pulumi path runs them: load balancers first, the
    preferred master first (plan.keepalived_order), then the backends (whose gateway step needs
    the VIP up); last, each load balancer waits until it serves."""
    creds = credentials(topo)
    lbs = [topo.host(n.name) for n in plan.keepalived_order(topo.lab)]  # the preferred master first
    everyone = lbs + list(topo.by_role("backend"))
    # ecmp mode: the router's FRR first, which every load balancer's session is to
    work_router = [(topo.router, s) for s in router.steps(topo.lab, creds)] if topo.lab.mode == "ecmp" else []
    # every node's steps, then each load balancer's wait until it serves (plan.serving_steps)
    work = work_router + [(h, step) for h in everyone if h.node for step in plan.host_steps(topo.lab, h.node, creds)]
    work += [(h, step) for h in lbs if h.node for step in plan.serving_steps(topo.lab, h.node)]
    # and the roll-out's gates, as the Pulumi path creates them (halab/core/rolling.py)
    work += [(h, step) for h in lbs if h.node for step in plan.gate_steps(topo.lab, h.node)]
    # a Progress (the CLI's) shows a line per step and its warnings, and keeps every line in its
    # file; a caller's own `log` gets every line the step printed, stderr's marked
    sink = progress.sink(log)
    for h, step in work:
        sink.started(h.name, step.name)
        p = running[h.name].run_bundle(step.bundle(), check=False)
        ok = p.returncode == 0
        sink.finished(h.name, step.name, ok=ok, stdout=p.stdout, stderr=p.stderr, code=p.returncode)
        if not ok:
            if isinstance(sink, progress.Progress):  # it has shown the whole output
                raise LabError(f"{h.name}: step {step.name} failed: its output is above, and in {sink.path}")
            raise LabError(f"{h.name}: step {step.name} failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")


def down(topo: Topology, log: Log = print) -> list[str]:
    """Removes every namespace, process, mount point and state file of the lab; returns what
    is still left afterwards (nothing, unless something resisted)."""
    names = {h.netns for h in topo.hosts} | _remembered(topo)
    removed = [n for n in sorted(names) if destroy_netns(n)]
    remove_tree(state_dir(topo), STATE_ROOT, STATE_ROOT.parent)
    log(f"lab {topo.prefix}: removed {len(removed)} namespaces" if removed else f"lab {topo.prefix}: nothing to remove")
    left = leftovers(topo)
    for item in left:
        log(f"  left behind: {item}")
    return left


def logs(topo: Topology, lines: int = 40) -> str:
    """The daemons' recent logs on every node, for a failure report."""
    out = []
    for h in topo.hosts:
        node = NsNode.attach(h.netns)
        if node is None or h.role not in ("lb", "backend"):
            continue
        lb_logs = [PATHS["KEEPALIVED_LOG"], PATHS["SECOND_CHANCE_LOG"]]
        files = lb_logs if h.role == "lb" else ["/var/log/apache2/error.log"]
        for f in files:
            p = node.run(f"tail -n {lines} {f} 2>&1", check=False)
            out.append(f"--- {h.name}: {f}\n{p.stdout}")
    return "\n".join(out)


def leftovers(topo: Topology) -> list[str]:
    """Anything of this lab still on the host: namespaces, their processes, mount points, state."""
    out = []
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    for h in topo.hosts:
        if h.netns in netns:
            out.append(f"namespace {h.netns}")
        if (SCRATCH_ROOT / h.netns).exists():
            out.append(f"mount point {SCRATCH_ROOT / h.netns}")
        if any(h.netns in line for line in Path("/proc/self/mountinfo").read_text().splitlines()):
            out.append(f"mount of {h.netns}")
    if state_dir(topo).exists():
        out.append(f"state {state_dir(topo)}")
    return out
