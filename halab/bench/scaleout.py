"""ecmp mode's scale-out (issue #24, docs/ecmp.md): requests per second through the VIP with 1, 2
and 3 load balancers announcing it, each capped at CAP of one core by a CPU cgroup of its own,
and the CPU each node spent meanwhile. On one small host every node shares the same cores: the
figure is the load balancers' only while each one that carries traffic sits at its cap and the
rest of the host (client, router, backends) has CPU to spare, which the table shows beside it.

The load balancers out of the count stop their haproxy (the watcher withdraws their route, as
in the verifier's kill drill); each count waits until the router's paths are exactly the
active ones."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from halab.bench.measure import wrk
from halab.drivers.netns.topology import Topology
from halab.verify import drills
from halab.verify.ecmp import hops
from halab.verify.probes import wait_until
from halab.verify.transport import Transport, VerifyContext

# Of one core, per load balancer: low enough that the rest of the lab stays far from a core with
# three of them at their cap (wrk's one client address sticks to one backend, which serves all).
CAP = 0.05
PERIOD_US = 20_000  # short (the kernel's least quota is 1 ms): a capped node waits 19 ms at most between its slices
# wrk's keep-alive connections per announcing load balancer (40, 80, then 120 in all): each
# node is offered the same concurrency whatever the count, so only the count changes
CONNECTIONS_PER_NODE = 40
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


@dataclass
class Count:
    """One run: `active` load balancers announcing, wrk's figures, and each host's CPU while it
    ran, as a share of one core (1.0: a core busy for the whole run)."""

    active: int
    rps: float
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)


class Caps:
    """A CPU cgroup per load balancer, capped at CAP of a core, holding every process of its
    node (its network namespace's). A process started into the node later (a step, a drill's
    restart) starts outside it: `apply` moves them in again before each run."""

    def __init__(self, topo: Topology):
        self.v2 = (CGROUP_V2 / "cgroup.controllers").exists()
        root = CGROUP_V2 if self.v2 else CGROUP_V1_CPU
        if not (root / "cgroup.procs").exists():
            raise RuntimeError(f"no CPU cgroup here ({root}): the scale-out cannot be capped")
        self.nodes = {h.name: h.netns for h in topo.hosts if h.role == "lb"}
        self.dirs = {name: root / f"halab-bench-{netns}" for name, netns in self.nodes.items()}
        self.root = root
        self.quota = int(CAP * PERIOD_US)

    def create(self) -> None:
        """The cgroups, capped (remove() undoes it, even after a failure half-way; on cgroup v2
        the CPU controller it enables at the root stays enabled, as systemd itself leaves it)."""
        root, quota = self.root, self.quota
        if self.v2:
            enabled = (root / "cgroup.subtree_control").read_text().split()
            if "cpu" not in enabled:
                (root / "cgroup.subtree_control").write_text("+cpu")
        for d in self.dirs.values():
            d.mkdir(exist_ok=True)
            if self.v2:
                (d / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (d / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (d / "cpu.cfs_quota_us").write_text(str(quota))

    def apply(self) -> None:
        for name, netns in self.nodes.items():
            for pid in _pids(netns):
                _move(self.dirs[name], pid)

    def remove(self) -> None:
        """Every process back in the root cgroup, then the cgroups gone."""
        for d in self.dirs.values():
            if not d.exists():
                continue
            for pid in (d / "cgroup.procs").read_text().split():
                _move(self.root, pid)
            d.rmdir()


def _pids(netns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    return out.split()


def _move(cgroup: Path, pid: str) -> None:
    try:
        (cgroup / "cgroup.procs").write_text(pid)
    except ProcessLookupError:
        pass  # gone meanwhile: nothing to cap (any other error: the figures would be uncapped)


# Each process's CPU time (user + system, clock ticks) in a node's own PID namespace, by PID.
CPU_BY_PID = "cat /proc/[0-9]*/stat 2>/dev/null | sed 's/ (.*) / /' | awk '{print $1, $13 + $14}'"


def _cpu(transport: Transport, hosts: list[str]) -> dict[str, dict[str, int]]:
    found = {}
    for h in hosts:
        out = transport.run(h, CPU_BY_PID, check=False).stdout
        found[h] = {pid: int(t) for pid, t in (line.split() for line in out.splitlines() if len(line.split()) == 2)}
    return found


def _cores(before: dict[str, int], after: dict[str, int], wall: float) -> float:
    """Cores used between two readings: each process's own growth (one that ended meanwhile
    counts for nothing, rather than taking its whole past off the sum)."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    return ticks / os.sysconf("SC_CLK_TCK") / wall


def _announced(transport: Transport, ctx: VerifyContext, active: list[str], bound: float) -> bool:
    lab = ctx.lab
    want = sorted(str(lb.address) for lb in lab.load_balancers if lb.name in active)
    return wait_until(lambda: hops(transport, ctx.router, str(lab.vip)) == want, bound, 0.2)


def scale_out(transport: Transport, ctx: VerifyContext, topo: Topology, seconds: int, log) -> list[Count]:
    """wrk through the VIP with 1, then 2, then 3 (every) load balancers announcing it, each
    capped; every load balancer is restored (haproxy started, uncapped) afterwards."""
    lab = ctx.lab
    names = [lb.name for lb in lab.load_balancers]
    hosts = [*names, *(b.name for b in lab.backends), ctx.router, ctx.client]
    transport.run(ctx.client, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
    caps = Caps(topo)
    counts: list[Count] = []
    try:
        caps.create()
        for lb in names[1:]:
            drills.action(transport, lb, "stop", "haproxy")
        for k in range(1, len(names) + 1):
            if k > 1:
                drills.action(transport, names[k - 1], "start", "haproxy")
            if not _announced(transport, ctx, names[:k], ctx.drill_bound + 30):
                raise RuntimeError(f"the router's paths never became {names[:k]}")
            caps.apply()
            time.sleep(1.0)
            before, t0 = _cpu(transport, hosts), time.monotonic()
            conns = CONNECTIONS_PER_NODE * k
            w = wrk(transport, ctx, f"http://{lab.vip}/", False, seconds, threads=2, connections=conns)
            wall = time.monotonic() - t0
            after = _cpu(transport, hosts)
            cpu = {h: _cores(before[h], after[h], wall) for h in hosts}
            # wrk itself has ended by then: its CPU is its shell's (measure.wrk), per request
            cpu[ctx.client] += w.cpu_ms.get("client", 0.0) * w.rps * seconds / 1000 / wall
            count = Count(k, w.rps, w.errors, cpu)
            counts.append(count)
            shares = ", ".join(f"{h} {count.cpu[h]:.2f}" for h in hosts)
            log(f"scale-out: {k} load balancer(s): {w.rps:.0f} requests/s, {w.errors} errors; CPU (cores): {shares}")
    finally:
        for lb in names:
            drills.action(transport, lb, "start", "haproxy", check=False)
        caps.remove()
    return counts


def section(counts: list[Count], names: list[str], cap: float = CAP) -> list[str]:
    """The report's scale-out table: each count's requests per second and its ratio to one load
    balancer's, each load balancer's CPU, and the busiest of the rest of the lab."""
    if not counts:
        return []
    one = counts[0].rps or 1.0
    lines = [
        "## Scale-out (ecmp mode)",
        "",
        "`tests/stacks/Pulumi.ecmp.yaml` in `halab:mode: ecmp`: wrk (2 threads, "
        f"{CONNECTIONS_PER_NODE} keep-alive connections per announcing load balancer, short HTTP requests) "
        "through the VIP, with 1, 2 and 3 load balancers announcing it, each "
        f"load balancer capped at {cap:.0%} of one core by a CPU cgroup of its own (the others stop haproxy, and "
        "the router's paths are waited for). *CPU*: the cores each host used while wrk ran (1.00: one core busy "
        "all along); *per load-balancer core*: requests per second for each core the load balancers used. The "
        "figure is the load balancers' while each active one sits at its cap and no other host nears a core.",
        "",
        "| load balancers | requests/s | vs one | per load-balancer core | errors | "
        + " | ".join(f"{n} CPU" for n in names)
        + " | busiest other host (CPU) |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |",
    ]
    for c in counts:
        others = {h: v for h, v in c.cpu.items() if h not in names}
        host = max(others, key=others.__getitem__)
        lb_cores = sum(c.cpu.get(n, 0.0) for n in names[: c.active]) or 1.0  # the announcing ones
        lines.append(
            f"| {c.active} | {c.rps:.0f} | {c.rps / one:.2f}× | {c.rps / lb_cores:.0f} | {c.errors} | "
            + " | ".join(f"{c.cpu.get(n, 0.0):.2f}" for n in names)
            + f" | {host} ({others[host]:.2f}) |"
        )
    return [*lines, ""]
