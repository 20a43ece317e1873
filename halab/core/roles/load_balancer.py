"""A load balancer: its packages, its node paths, and its steps (sysctl, TPROXY, the haproxy
secrets, haproxy, keepalived), then the wait until it serves, and the roll-out's gates."""

from __future__ import annotations

from halab.core import render
from halab.core.model import Credentials, Lab, Node
from halab.core.roles.shared import NETWORKD_CONF
from halab.core.step import Step

PACKAGES = ("haproxy", "keepalived", "iptables", "iproute2", "python3")  # python3: the haproxy watcher
SYSCTL = "/etc/sysctl.d/90-halab-lb.conf"
HAPROXY_CTL = "/usr/local/sbin/halab-haproxy-ctl"


def steps(lab: Lab, host: Node, creds: Credentials) -> tuple[Step, ...]:
    """A load balancer's steps after its library, in order: haproxy before keepalived, which
    tracks it; the two that write a password are secret."""
    h = host.name
    return (
        Step(h, "ready", "wait-ready.sh"),
        Step(h, "packages", "packages.sh", PACKAGES),
        Step(h, "sysctl", "sysctl.sh", (SYSCTL,), ((SYSCTL, render.lb_sysctl(lab)),)),
        Step(
            h,
            "tproxy",
            "lb-tproxy.sh",
            files=(
                ("/usr/local/sbin/halab-tproxy", render.node_file("halab-tproxy")),
                ("/etc/systemd/system/halab-tproxy.service", render.node_file("halab-tproxy.service")),
                (NETWORKD_CONF, render.node_file("networkd-halab.conf")),
            ),
        ),
        Step(
            h,
            "secrets",
            "lb-secrets.sh",
            files=(("/etc/haproxy/halab-secrets.env", render.haproxy_secrets_env(creds)),),
            secret=True,
        ),
        Step(
            h,
            "haproxy",
            "lb-haproxy.sh",
            files=(
                ("/etc/haproxy/haproxy.cfg", render.haproxy_cfg(lab, host)),
                ("/etc/haproxy/halab-new-servers.state", render.haproxy_new_servers_state(lab)),
                ("/usr/local/sbin/halab-haproxy-state", render.node_file("halab-haproxy-state")),
                ("/etc/systemd/system/haproxy.service.d/halab.conf", render.node_file("haproxy-halab.conf")),
            ),
        ),
        Step(
            h,
            "keepalived",
            "lb-keepalived.sh",
            files=(
                ("/etc/keepalived/keepalived.conf", render.keepalived_conf(lab, host, creds)),
                ("/etc/keepalived/halab-check-haproxy", render.node_file("halab-check-haproxy")),
                ("/etc/keepalived/halab-notify", render.node_file("halab-notify")),
                ("/etc/halab/vrrp.conf", render.vrrp_conf(lab, host)),
                ("/usr/local/sbin/halab-keepalived-hooks", render.node_file("halab-keepalived-hooks")),
                ("/etc/systemd/system/keepalived.service.d/halab.conf", render.node_file("keepalived-halab.conf")),
                ("/usr/local/sbin/halab-haproxy-watch", render.node_file("halab-haproxy-watch")),
                ("/etc/halab/haproxy-watch.conf", render.haproxy_watch_conf(lab)),
                (
                    "/etc/systemd/system/halab-haproxy-watch.service",
                    render.node_file("halab-haproxy-watch.service"),
                ),
                # a first start beside a peer that holds the VIP waits until haproxy serves
                ("/etc/halab/join.conf", render.join_conf(lab)),
                _haproxy_ctl(),
            ),
            secret=True,
        ),
    )


def serving_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """What a load balancer runs last, after every node's steps: `up` ends when the lab serves
    (every pool server UP on each haproxy), not when the last file is written."""
    files = (("/etc/halab/serving.conf", render.serving_conf(lab)), _haproxy_ctl())
    return (Step(host.name, "serving", "lb-serving.sh", files=files, library=True),)


def _haproxy_ctl() -> tuple[str, str]:
    """The runtime-API client the keepalived, serving and gate steps install and run."""
    return (HAPROXY_CTL, render.node_file("halab-haproxy-ctl"))


def handoff_step(lab: Lab, lb: Node) -> Step:
    """The roll-out's gate around a load balancer's replacement (halab/core/rolling.py)."""
    files = (("/etc/halab/handoff.conf", render.handoff_conf(lab)), _haproxy_ctl())
    return Step(lb.name, "handoff", "lb-handoff.sh", files=files, library=True)


def drain_step(lab: Lab, lb: Node, backend: Node) -> Step:
    """The roll-out's gate on a load balancer around a backend's replacement (halab/core/rolling.py)."""
    files = (
        ("/etc/halab/drain.conf", render.drain_conf(lab, backend)),
        _haproxy_ctl(),
    )
    return Step(lb.name, f"drain-{backend.name}", "lb-drain.sh", files=files, library=True)


def gate_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """A load balancer's roll-out gates: its hand-off, then one drain step per backend. They run
    from the node's library like every later step: it keeps each version it was given (by
    sha256), so a gate's delete, which runs the bundle it was created with, finds its code after
    an upgrade installed newer files."""
    return (handoff_step(lab, host), *(drain_step(lab, host, b) for b in lab.backends))
