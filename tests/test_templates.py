"""haproxy.cfg and keepalived.conf are whole-file Jinja2 templates (halab/node/templates/*.j2),
no longer string templates filled with blocks written in Python (issue #26). They render what
the old renderer rendered, byte for byte, but for the differences listed in INTENDED: on every
stack in the repo, and on variants that reach each branch the repo's stacks do not (PROXY
protocol, X-Forwarded-For, each check, nopreempt, the seed's process check, VRRPv3 multicast,
no stats page, three load balancers). The old renderer's outputs are kept as their sha256
(tests/stacks/rendered-before-jinja2.json, taken before the move). Fast: rendering only."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, STACKS

from halab.core import config, render, stackfile
from halab.core.model import Credentials

BEFORE = json.loads((ROOT / "tests/stacks/rendered-before-jinja2.json").read_text())

# What changed on purpose since, as (file, a pattern of the new text, the old text it replaced).
INTENDED = [
    # serving, not only alive: /halab-serving on the health frontend, tracked with a negative weight
    # (first: the blank line after monitor-uri below is undone once these lines are gone)
    (
        "haproxy.cfg",
        r"#\n# /halab-serving says [^\n]*\n(# [^\n]*\n){3}"
        r"(frontend halab-health\n(    [^\n]*\n){3})(    http-request return [^\n]*\n)+",
        r"\2",
    ),
    # the stats page's block was glued to the health frontend's: a blank line between them now
    ("haproxy.cfg", "    monitor-uri /halab-health\n\n# Who may read", "    monitor-uri /halab-health\n# Who may read"),
    # the safety-net script's timeout: 10 s at least (it was the master-down interval and a second)
    (
        "keepalived.conf",
        re.escape(
            "# failures in a row; the script bounds its own request (0.5 s), and its timeout is long (10 s, or\n"
            "# the master-down interval and a second), so a CPU stall that VRRP rides out, and that a fork of\n"
            "# bash and `ss` does not finish in, does not move the VIP through this script alone."
        ),
        "# failures in a row; patient as VRRP itself (timeout: the master-down interval and a second), so\n"
        "# a CPU stall that VRRP rides out does not move the VIP through this script alone.",
    ),
    # #23: the frontends listen on the loopback, TPROXY brings them the SYNs to the VIP
    (
        "haproxy.cfg",
        r"    # Clients connect to (\S+):(\d+): TPROXY .*\n.*\n.*\n    bind 127\.0\.0\.23:\d+ transparent",
        "    # The VIP may live on another load balancer: ip_nonlocal_bind lets this one listen anyway.\n"
        r"    bind \1:\2 transparent",
    ),
    # #23: the second-chance rule, on the VIP holder only
    ("keepalived.conf", r"    # The second chance \(docs/handoff\.md\)[^}]*no_track\n    }\n", ""),
    # the safety-net script forgives a reload's misses, as the watcher does: its grace, an argument
    ("keepalived.conf", r"# Misses within \d+ s of a reload's start pass, as in the watcher: [^\n]*\n", ""),
    ("keepalived.conf", r"(halab-check-haproxy \d+) \d+ ", r"\1 "),
    (
        "keepalived.conf",
        r"\n# Serving, not only alive: [^\n]*\n(# [^\n]*\n){4}track_file haproxy_serving \{[^}]*\}\n",
        "",
    ),
    ("keepalived.conf", r"\n        haproxy_serving weight -\d+", ""),
]
# ... and the same change's value, which depends on the stack's advert interval.
INTENDED_BY_LAB = [
    (
        "keepalived.conf",
        lambda v: (f"    timeout {v.check_timeout}\n", f"    timeout {v.master_down_and_a_second}\n"),
    ),
]
# ... and the old haproxy.cfg ended in a blank line, which the template leaves out.
OLD_TRAILING_BLANK = {"haproxy.cfg": "\n"}

VARIANTS = {
    "proxyproto-connect": {
        "halab:services": [
            {"name": "http", "port": 80, "transparency": "proxy-protocol", "check": {"type": "connect"}},
            {"name": "ffw", "port": 8080, "transparency": "forwarded-for", "sticky": False},
        ]
    },
    "nopreempt-process-v3-multicast": {
        "halab:vrrp": {
            "preempt": False, "haproxyCheck": "process-name", "version": 3, "mode": "multicast",
            "advertInterval": 0.5,
        }
    },
    "nostats-3lb": {
        "halab:haproxy": {"statsPort": 0},
        "halab:loadBalancers": [
            {"name": "lb1", "address": "192.168.69.111"},
            {"name": "lb2", "address": "192.168.69.112"},
            {"name": "lb3", "address": "192.168.69.113"},
        ],
    },
    "banner-smtp": {
        "halab:services": [
            {"name": "tcp1", "port": 2525, "protocol": "tcp", "check": {"type": "smtp"}},
            {"name": "tcp2", "port": 7000, "protocol": "tcp"},
            {"name": "web", "port": 80, "check": {"type": "http", "path": "/health", "status": 204}},
        ]
    },
}  # fmt: skip
VARIANT_CREDS = Credentials(vrrp_auth_pass="pw123456", stats_password="statspw12345")


def as_before(name: str, text: str, lab) -> str:
    """The new output with each intended difference undone, so it can match the old one (a
    difference the file has no place for, the stats block without a stats page, is no-op)."""
    for file, new, old in INTENDED:
        if file == name:
            text = re.sub(new, old, text)
    for file, change in INTENDED_BY_LAB:
        if file == name:
            text = text.replace(*change(lab.vrrp))
    return text + OLD_TRAILING_BLANK.get(name, "")


def rendered(lab, creds: Credentials) -> dict[str, str]:
    out = {}
    for lb in lab.load_balancers:
        out[f"{lb.name}/haproxy.cfg"] = render.haproxy_cfg(lab, lb)
        out[f"{lb.name}/keepalived.conf"] = render.keepalived_conf(lab, lb, creds)
    return out


def cases() -> list[tuple[str, object, Credentials]]:
    # the stacks the old renderer rendered (ecmp mode came after it: nothing to compare)
    stacks = [(Path(STACKS[s]).stem, s) for s in sorted(STACKS) if s != "ecmp"]
    out: list[tuple[str, object, Credentials]] = [
        (stem, config.parse(stackfile.load_stack_file(str(STACKS[s]))), Credentials.placeholder()) for stem, s in stacks
    ]
    out += [(f"variant:{name}", config.parse(raw), VARIANT_CREDS) for name, raw in VARIANTS.items()]
    return out


@pytest.mark.parametrize("key,lab,creds", cases(), ids=lambda x: x if isinstance(x, str) else "")
def test_the_templates_render_what_the_old_renderer_did(key, lab, creds):
    for rel, text in rendered(lab, creds).items():
        want = BEFORE[f"{key}/{rel}"]
        got = hashlib.sha256(as_before(rel.split("/")[1], text, lab).encode()).hexdigest()
        assert got == want, f"{key}/{rel} differs from the old renderer's (scripts/render shows it)"


def test_every_old_render_is_compared():
    """Each kept digest has its case here: none is left unchecked."""
    keys = {f"{key}/{rel}" for key, lab, creds in cases() for rel in rendered(lab, creds)}
    assert keys == set(BEFORE), sorted(set(BEFORE) ^ keys)


def test_the_templates_own_their_files():
    """Every template is a whole file in one engine (Jinja2), and the renderer writes no config
    line of its own: haproxy's checks, keepalived's peers and Apache's virtual hosts are in the
    templates, not in Python strings."""
    templates = sorted(p.name for p in render.TEMPLATES.iterdir())
    assert {"haproxy.cfg.j2", "keepalived.conf.j2", "apache-site.conf.j2"} <= set(templates), templates
    assert all(t.endswith(".j2") for t in templates), templates
    src = (ROOT / "halab/core/render.py").read_text()
    for line in ("option httpchk", "unicast_peer", "VirtualHost", "SSLEngine", "RemoteIP", "string import Template"):
        assert line not in src, line
