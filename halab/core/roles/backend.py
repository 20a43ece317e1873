"""A backend: its packages and its steps (sysctl, the gateway via the VIP, the
web and TCP services it serves)."""

from __future__ import annotations

from halab.core import render
from halab.core.model import Credentials, Lab, Node
from halab.core.step import Step
from halab.node.paths import PATHS as P

PACKAGES = ("apache2", "ssl-cert", "iputils-ping", "iproute2", "python3")
# ecmp mode's too: the return path marks each load balancer's connections (halab-routes)
ECMP_PACKAGES = ("iptables",)


def steps(lab: Lab, host: Node, creds: Credentials) -> tuple[Step, ...]:
    """A backend's steps after its library, in order (it holds no secret: `creds` unused)."""
    h, sysctl = host.name, P["BACKEND_SYSCTL_CONF"]
    # The gateway before the services: a backend whose checks pass gets clients, and their replies
    # must already go back through the VIP, not to the hypervisor (where a client never sees them).
    # The gateway step waits for every load balancer's last step (its `extra_after`).
    return (
        Step(h, "ready", "wait-ready.sh"),
        Step(h, "packages", "packages.sh", PACKAGES + ECMP_PACKAGES if lab.mode == "ecmp" else PACKAGES),
        Step(h, "sysctl", "sysctl.sh", (sysctl,), ((sysctl, render.backend_sysctl(lab)),)),
        Step(
            h,
            "gateway",
            "backend-gateway.sh",
            files=(
                (P["ROUTES_CONF"], render.backend_routes_conf(lab)),
                (P["ROUTES_BIN"], render.node_file("halab-routes")),
                (P["ROUTES_UNIT"], render.node_file("halab-routes.service")),
                (P["NETWORKD_CONF"], render.node_file("networkd-halab.conf")),
            ),
        ),
        # Both on every backend: each converges what this backend serves, and stops what it must
        # not (a backend in no HTTP pool runs no Apache; in no TCP pool, no banner).
        Step(
            h,
            "web",
            "backend-web.sh",
            files=(
                (P["APACHE_PORTS_CONF"], render.apache_ports_conf(lab, host)),
                (P["APACHE_SITE"], render.apache_site(lab, host)),
                (P["INDEX_PAGE"], render.index_page(host)),
            ),
        ),
        Step(
            h,
            "tcp",
            "backend-tcp.sh",
            files=(
                (P["BANNER_BIN"], render.node_file("halab-banner")),
                (P["BANNER_CONF"], render.banner_conf(lab, host)),
                (P["BANNER_UNIT"], render.node_file("halab-banner.service")),
            ),
        ),
    )


def serving_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """None: the load balancers' serving steps wait for the backends."""
    return ()


def gate_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """None: a backend's drain gates run on the load balancers."""
    return ()
