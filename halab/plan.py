"""The provisioning plan: for each node, the ordered steps that configure it.

A step is a script of `scripts/steps/` plus the rendered files it installs. `Step.bundle()`
packs both into one self-contained bash program, run as root on the node: over SSH by the
Pulumi driver (`sudo bash -s`), inside a namespace-lab node by the lab. The same bytes either
way, so both drivers run the same logic.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import shlex
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from halab import render
from halab.model import Lab, Node

STEPS_DIR = Path(__file__).parent.parent / "scripts" / "steps"

LB_PACKAGES = ("haproxy", "keepalived", "iptables", "iproute2", "python3")  # python3: the haproxy watcher
BACKEND_PACKAGES = ("apache2", "ssl-cert", "iputils-ping", "iproute2", "python3")

LB_SYSCTL = "/etc/sysctl.d/90-halab-lb.conf"
BACKEND_SYSCTL = "/etc/sysctl.d/90-halab-backend.conf"
# systemd-networkd leaves the lab's policy rules and routes alone (read at its next start)
NETWORKD_CONF = "/etc/systemd/networkd.conf.d/90-halab.conf"


@dataclass(frozen=True)
class Step:
    host: str
    name: str
    script: str  # a file of scripts/steps/
    args: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (absolute path on the node, content)
    secret: bool = False  # a file holds a secret: the driver must keep the bundle secret

    def bundle(self) -> str:
        return self._bundle

    def digest(self) -> str:
        return hashlib.sha256(self._bundle.encode()).hexdigest()

    @cached_property
    def _bundle(self) -> str:
        """Built once per step: the Pulumi program asks each step for its bundle and its digest,
        a thousand steps at 100 backends."""
        lines = [
            "#!/usr/bin/env bash",
            f"# ha-lb-lab step {self.name!r} for {self.host}: scripts/steps/{self.script} and the files it installs.",
            "set -euo pipefail",
            'HALAB_STAGE=$(mktemp -d "${TMPDIR:-/tmp}/halab-step.XXXXXX")',
            f"export HALAB_STAGE HALAB_STEP={shlex.quote(self.host + '/' + self.name)}",
            "trap 'rm -rf \"$HALAB_STAGE\"' EXIT",
        ]
        staged = [
            ("lib.sh", (STEPS_DIR / "lib.sh").read_text()),
            ("step.sh", (STEPS_DIR / self.script).read_text()),
        ] + [("root" + path, content) for path, content in self.files]
        lines += [_staged(rel, content) for rel, content in staged]
        lines.append(" ".join(["bash", '"$HALAB_STAGE/step.sh"', *map(shlex.quote, self.args)]))
        return "\n".join(lines) + "\n"


@lru_cache(maxsize=256)
def _staged(rel: str, content: str) -> str:
    """The lines that write one file into the stage. Cached by content: every node's bundles
    carry lib.sh and the same step scripts."""
    parent = posixpath.dirname(rel)
    b64 = base64.encodebytes(content.encode()).decode().rstrip("\n")
    put = f"base64 -d >\"$HALAB_STAGE/{rel}\" <<'HALAB_EOF'\n{b64}\nHALAB_EOF"
    return f'mkdir -p "$HALAB_STAGE/{parent}"\n{put}' if parent else put


def host_steps(lab: Lab, host: Node, creds: render.Credentials) -> tuple[Step, ...]:
    """The steps for one node, in the order they must run."""
    h = host.name
    if host.role == "lb":
        return (
            Step(h, "ready", "wait-ready.sh"),
            Step(h, "packages", "packages.sh", LB_PACKAGES),
            Step(h, "sysctl", "sysctl.sh", (LB_SYSCTL,), ((LB_SYSCTL, render.lb_sysctl(lab)),)),
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
                    ("/usr/local/sbin/halab-haproxy-ctl", render.node_file("halab-haproxy-ctl")),
                ),
                secret=True,
            ),
        )
    # The gateway before the services: a backend whose checks pass gets clients, and their replies
    # must already go back through the VIP, not to the hypervisor (where a client never sees them).
    # The gateway step waits for every load balancer's last step (its `extra_after`).
    return (
        Step(h, "ready", "wait-ready.sh"),
        Step(h, "packages", "packages.sh", BACKEND_PACKAGES),
        Step(h, "sysctl", "sysctl.sh", (BACKEND_SYSCTL,), ((BACKEND_SYSCTL, render.backend_sysctl(lab)),)),
        Step(
            h,
            "gateway",
            "backend-gateway.sh",
            files=(
                ("/etc/halab/routes.conf", render.backend_routes_conf(lab)),
                ("/usr/local/sbin/halab-routes", render.node_file("halab-routes")),
                ("/etc/systemd/system/halab-routes.service", render.node_file("halab-routes.service")),
                (NETWORKD_CONF, render.node_file("networkd-halab.conf")),
            ),
        ),
        # Both on every backend: each converges what this backend serves, and stops what it must
        # not (a backend in no HTTP pool runs no Apache; in no TCP pool, no banner).
        Step(
            h,
            "web",
            "backend-web.sh",
            files=(
                ("/etc/apache2/ports.conf", render.apache_ports_conf(lab, host)),
                ("/etc/apache2/sites-available/halab.conf", render.apache_site(lab, host)),
                ("/var/www/halab/index.shtml", render.template("index.shtml.tmpl", host=h)),
            ),
        ),
        Step(
            h,
            "tcp",
            "backend-tcp.sh",
            files=(
                ("/usr/local/sbin/halab-banner", render.node_file("halab-banner")),
                ("/etc/halab/banner.conf", render.banner_conf(lab, host)),
                ("/etc/systemd/system/halab-banner.service", render.node_file("halab-banner.service")),
            ),
        ),
    )


def serving_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """What a load balancer runs last, after every node's steps: `up` ends when the lab serves
    (every pool server UP on each haproxy), not when the last file is written."""
    if host.role != "lb":
        return ()
    return (
        Step(host.name, "serving", "lb-serving.sh", files=(("/etc/halab/serving.conf", render.serving_conf(lab)),)),
    )


def keepalived_order(lab: Lab) -> tuple[Node, ...]:
    """The load balancers in the order their keepalived must first start: highest priority first.
    Each node starts as BACKUP, and the first whose master-down timer runs out becomes master;
    with `nopreempt` it then stays master whatever the priorities. Started in this order (each
    driver waits for one node's keepalived step before the next's), the preferred node's timer
    runs out first, so the first master is the one the config prefers, and `nopreempt` governs
    only what happens after a failure."""
    return tuple(sorted(lab.load_balancers, key=lambda n: -(n.priority or 0)))


def step_names(lab: Lab, host: Node) -> tuple[str, ...]:
    """Known without credentials, so a driver can declare its resources before secrets resolve."""
    return tuple(s.name for s in host_steps(lab, host, render.Credentials.placeholder()))
