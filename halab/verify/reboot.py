"""`vm-lab reboot`: what a reboot and a systemd-networkd restart leave of a node's setup.

A load balancer (the VIP's holder) and a backend are rebooted together. Once each answers SSH
again on a new boot, systemd alone must have brought back: on the load balancer the TPROXY
rules and policy routing (halab-tproxy), haproxy, its watcher and keepalived, and the VIP;
on the backend the default route via the VIP and the test-client routes (halab-routes) and its
servers. Then systemd-networkd is restarted on each of them, running, and the same must still
hold (systemd-networkd v249+ removes foreign rules, routes and addresses when it starts). Last,
the verifier's read-only checks run again (VIP, adverts, health, services, spread, stickiness,
stats, log).
"""

from __future__ import annotations

import subprocess
import threading
import time

from halab.core.model import Lab, Node
from halab.node.paths import PATHS
from halab.verify import checks, probes
from halab.verify.lab_access import VmSession
from halab.verify.ssh import SshTransport

BOOT_BOUND_S = 600.0


def boot_id(transport: SshTransport, host: str) -> str | None:
    try:
        p = transport.run(host, ["cat", "/proc/sys/kernel/random/boot_id"], check=False, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def units(lab: Lab, node: Node) -> list[str]:
    if node.role == "lb":
        return ["halab-tproxy", "halab-second-chance", "haproxy", "halab-haproxy-watch", "keepalived"]
    out = ["halab-routes"]
    if lab.http_services(node):
        out.append("apache2")
    if lab.tcp_services(node):
        out.append("halab-banner")
    return out


def setup_state(transport: SshTransport, lab: Lab, node: Node) -> list[str]:
    """What is missing of the node's setup: empty when everything is in place."""
    missing = []
    for unit in units(lab, node):
        if transport.run(node.name, ["systemctl", "is-active", "--quiet", unit], check=False).returncode != 0:
            missing.append(f"{unit} is not active")
    script = PATHS["TPROXY_BIN"] if node.role == "lb" else PATHS["ROUTES_BIN"]
    p = transport.run(node.name, [script, "check"], check=False)
    if p.returncode != 0:
        missing.append(f"{script} check: {(p.stderr or p.stdout).strip()}")
    return missing


def vip_holder(transport: SshTransport, lab: Lab) -> str | None:
    held = probes.holders(transport, lab)
    return held[0] if len(held) == 1 else None


def wait_state(transport: SshTransport, lab: Lab, node: Node, bound: float) -> tuple[float, list[str]]:
    """Seconds until the node's setup is complete (or the bound), and what is still missing."""
    t0 = time.monotonic()
    missing = setup_state(transport, lab, node)
    while missing and time.monotonic() - t0 < bound:
        time.sleep(1)
        missing = setup_state(transport, lab, node)
    return time.monotonic() - t0, missing


def reboot_and_wait(transport: SshTransport, host: str, before: str | None, out: dict[str, float | str]) -> None:
    t0 = time.monotonic()
    try:
        transport.run(host, "systemctl reboot", check=False, timeout=15)
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() - t0 < BOOT_BOUND_S:
        now = boot_id(transport, host)
        if now and now != before:
            out[host] = time.monotonic() - t0
            return
        time.sleep(2)
    out[host] = f"no new boot within {BOOT_BOUND_S:.0f}s"


def run(config_file: str) -> int:
    rows: list[tuple[str, bool, str]] = []

    def row(name: str, ok: bool, detail: str) -> None:
        rows.append((name, ok, detail))
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    with VmSession(config_file) as s:
        transport, lab = s.transport, s.model
        master = vip_holder(transport, lab)
        lb = lab.node(master) if master else lab.load_balancers[0]
        be = lab.backends[-1]
        print(f"rebooting {lb.name} (VIP holder: {master}) and {be.name}", flush=True)
        before = {n.name: boot_id(transport, n.name) for n in (lb, be)}
        booted: dict[str, float | str] = {}
        threads = [
            threading.Thread(target=reboot_and_wait, args=(transport, n.name, before[n.name], booted)) for n in (lb, be)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for n in (lb, be):
            took = booted.get(n.name)
            if not isinstance(took, float):
                row(f"{n.name} reboots", False, str(took))
                continue
            settle, missing = wait_state(transport, lab, n, 120)
            row(
                f"{n.name} after a reboot: {', '.join(units(lab, n))} and its rules/routes, by systemd alone",
                not missing,
                f"SSH after {took:.0f}s, complete {settle:.0f}s later" if not missing else "; ".join(missing),
            )
        # with preemption the highest priority takes the VIP back, whoever held it before
        first = max(lab.load_balancers, key=lambda n: n.priority or 0).name if lab.vrrp.preempt else None
        ok = probes.wait_until(
            lambda: vip_holder(transport, lab) == first if first else vip_holder(transport, lab) is not None, 60, 1
        )
        where = f", {first} (preempt)" if first else ""
        row(f"the VIP on one load balancer{where}", ok, f"holder {vip_holder(transport, lab)}")
        for n in (lb, be):
            holder = vip_holder(transport, lab)
            transport.run(n.name, ["systemctl", "restart", "systemd-networkd"])
            time.sleep(3)
            missing = setup_state(transport, lab, n)
            after = vip_holder(transport, lab)
            if holder == n.name and after != holder:
                missing.append(f"the VIP left {n.name} (now {after})")
            row(
                f"{n.name}: systemd-networkd restarted, nothing removed",
                not missing,
                "; ".join(missing) or "all in place",
            )
    failed = [r for r in rows if not r[1]]
    print(f"\nreboot: {len(rows) - len(failed)} passed, {len(failed)} failed", flush=True)
    if failed:
        return 1
    print("verify after the reboots (--read-only: the drills ran in `verify`):", flush=True)
    with VmSession(config_file, read_only=True) as s:
        return checks.run_and_report(s.transport, s.ctx)
