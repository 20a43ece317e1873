"""A backend: its packages, its node paths, and its steps (sysctl, the gateway via the VIP, the
web and TCP services it serves)."""

from __future__ import annotations

from halab.core import render
from halab.core.model import Credentials, Lab, Node
from halab.core.roles.shared import NETWORKD_CONF
from halab.core.step import Step

PACKAGES = ("apache2", "ssl-cert", "iputils-ping", "iproute2", "python3")
SYSCTL = "/etc/sysctl.d/90-halab-backend.conf"


def steps(lab: Lab, host: Node, creds: Credentials) -> tuple[Step, ...]:
    """A backend's steps after its library, in order (it holds no secret: `creds` unused)."""
    h = host.name
    # The gateway before the services: a backend whose checks pass gets clients, and their replies
    # must already go back through the VIP, not to the hypervisor (where a client never sees them).
    # The gateway step waits for every load balancer's last step (its `extra_after`).
    return (
        Step(h, "ready", "wait-ready.sh"),
        Step(h, "packages", "packages.sh", PACKAGES),
        Step(h, "sysctl", "sysctl.sh", (SYSCTL,), ((SYSCTL, render.backend_sysctl(lab)),)),
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
                ("/var/www/halab/index.shtml", render.index_page(host)),
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
    """None: the load balancers' serving steps wait for the backends."""
    return ()


def gate_steps(lab: Lab, host: Node) -> tuple[Step, ...]:
    """None: a backend's drain gates run on the load balancers."""
    return ()
