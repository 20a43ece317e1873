"""A load balancer: its packages and its steps (sysctl, TPROXY, the haproxy
secrets, haproxy, keepalived), then the wait until it serves, and the roll-out's gates."""

from __future__ import annotations

from halab.core import render
from halab.core.model import Credentials, Lab, Node
from halab.core.step import Step
from halab.node.paths import PATHS as P

PACKAGES = ("haproxy", "keepalived", "iptables", "iproute2", "python3")  # python3: the haproxy watcher
# ecmp mode's too (frr-pythontools: frr-reload.py, which applies a changed frr.conf in place)
ECMP_PACKAGES = ("frr", "frr-pythontools")


def steps(lab: Lab, host: Node, creds: Credentials) -> tuple[Step, ...]:
    """A load balancer's steps after its library, in order: haproxy before keepalived, which
    tracks it; the two that write a password are secret."""
    h, sysctl = host.name, P["LB_SYSCTL_CONF"]
    packages = PACKAGES + ECMP_PACKAGES if lab.mode == "ecmp" else PACKAGES
    return (
        Step(h, "ready", "wait-ready.sh"),
        Step(h, "packages", "packages.sh", packages),
        Step(h, "sysctl", "sysctl.sh", (sysctl,), ((sysctl, render.lb_sysctl(lab, host)),)),
        Step(
            h,
            "tproxy",
            "lb-tproxy.sh",
            files=(
                (P["TPROXY_BIN"], render.node_file("halab-tproxy")),
                (P["TPROXY_UNIT"], render.node_file("halab-tproxy.service")),
                (P["TPROXY_CONF"], render.tproxy_conf(lab, host)),
                (P["SECOND_CHANCE_BIN"], render.node_file("halab-second-chance")),
                (P["SECOND_CHANCE_UNIT"], render.node_file("halab-second-chance.service")),
                (P["NETWORKD_CONF"], render.node_file("networkd-halab.conf")),
            ),
        ),
        Step(
            h,
            "secrets",
            "lb-secrets.sh",
            files=((P["HAPROXY_SECRETS"], render.haproxy_secrets_env(creds)),),
            secret=True,
        ),
        Step(
            h,
            "haproxy",
            "lb-haproxy.sh",
            files=(
                (P["HAPROXY_CFG"], render.haproxy_cfg(lab, host)),
                (P["HAPROXY_NEW_SERVERS"], render.haproxy_new_servers_state(lab)),
                (P["HAPROXY_STATE_BIN"], render.node_file("halab-haproxy-state")),
                (P["HAPROXY_DROPIN"], render.node_file("haproxy-halab.conf")),
            ),
        ),
        _keepalived_step(lab, host, creds) if lab.mode == "active-standby" else _bgp_step(lab, host, creds),
    )


def _watcher_files(lab: Lab) -> tuple[tuple[str, str], ...]:
    """The haproxy watcher (halab-haproxy-watch): keepalived tracks its files; in ecmp mode it
    sets the VIP's route that bgpd announces."""
    return (
        (P["WATCH_BIN"], render.node_file("halab-haproxy-watch")),
        (P["WATCH_CONF"], render.haproxy_watch_conf(lab)),
        (P["WATCH_UNIT"], render.node_file("halab-haproxy-watch.service")),
    )


def _keepalived_step(lab: Lab, host: Node, creds: Credentials) -> Step:
    """active-standby: VRRP (it holds the VRRP password: secret)."""
    files = (
        (P["KEEPALIVED_CONF"], render.keepalived_conf(lab, host, creds)),
        (P["KEEPALIVED_CHECK"], render.node_file("halab-check-haproxy")),
        (P["KEEPALIVED_NOTIFY"], render.node_file("halab-notify")),
        (P["VRRP_CONF"], render.vrrp_conf(lab, host)),
        (P["KEEPALIVED_HOOKS_BIN"], render.node_file("halab-keepalived-hooks")),
        (P["KEEPALIVED_DROPIN"], render.node_file("keepalived-halab.conf")),
        *_watcher_files(lab),
        # a first start beside a peer that holds the VIP waits until haproxy serves
        (P["JOIN_CONF"], render.join_conf(lab)),
        _haproxy_ctl(),
    )
    return Step(host.name, "keepalived", "lb-keepalived.sh", files=files, secret=True)


def _bgp_step(lab: Lab, host: Node, creds: Credentials) -> Step:
    """ecmp: FRR's session to the router, and the watcher that makes bgpd announce the VIP while
    haproxy serves (secret when the session has a password)."""
    files = (
        (P["FRR_CONF"], render.frr_conf(lab, host, creds)),
        (P["FRR_DAEMONS"], render.whole("frr-daemons.j2")),
        *_watcher_files(lab),
        (P["WATCH_ECMP_DROPIN"], render.node_file("halab-haproxy-watch-ecmp.conf")),
    )
    return Step(host.name, "bgp", "lb-bgp.sh", files=files, secret=bool(creds.bgp_password))


def serving_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """What a load balancer runs last, after every node's steps: `up` ends when the lab serves
    (every pool server UP on each haproxy), not when the last file is written."""
    files = ((P["SERVING_CONF"], render.serving_conf(lab)), _haproxy_ctl())
    return (Step(host.name, "serving", "lb-serving.sh", files=files, library=True),)


def _haproxy_ctl() -> tuple[str, str]:
    """The runtime-API client the keepalived, serving and gate steps install and run."""
    return (P["HAPROXY_CTL_BIN"], render.node_file("halab-haproxy-ctl"))


def handoff_step(lab: Lab, lb: Node) -> Step:
    """The roll-out's gate around a load balancer's replacement (halab/core/rolling.py)."""
    files = ((P["HANDOFF_CONF"], render.handoff_conf(lab)), _haproxy_ctl())
    return Step(lb.name, "handoff", "lb-handoff.sh", files=files, library=True)


def drain_step(lab: Lab, lb: Node, backend: Node) -> Step:
    """The roll-out's gate on a load balancer around a backend's replacement (halab/core/rolling.py)."""
    files = (
        (P["DRAIN_CONF"], render.drain_conf(lab, backend)),
        _haproxy_ctl(),
    )
    return Step(lb.name, f"drain-{backend.name}", "lb-drain.sh", files=files, library=True)


def gate_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """A load balancer's roll-out gates: its hand-off, then one drain step per backend. They run
    from the node's library like every later step: it keeps each version it was given (by
    sha256), so a gate's delete, which runs the bundle it was created with, finds its code after
    an upgrade installed newer files."""
    return (handoff_step(lab, host), *(drain_step(lab, host, b) for b in lab.backends))
