"""A new user's first lines: the README's set-up-and-up line, run verbatim on a fresh minimal
Debian 12, and Debian 13 (scripts/fresh-root: mmdebstrap's minbase, its own mount, PID and network namespaces,
apt reaching only a local archive), brings the namespace lab up and `verify --read-only` passes
there; the README's test line is the one CI runs; the package list is the one every tool reads.

The fresh-root test costs about 30 s here (installing 11 packages in the fresh root, the lab's
`up` and its read-only checks), plus the cached root's build on a machine without it (14 s here,
where Debian's mirror is near; mostly the download elsewhere)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, need_root_and

from halab.core.roles import backend, load_balancer
from halab.drivers import host_packages
from halab.drivers.netns import lab
from halab.node.paths import PATHS


def readme_line(start: str) -> str:
    """The README's command line that starts with `start`, without its comment (where it is
    shown more than once, the same line each time)."""
    lines = {line.split("#", 1)[0].strip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith(start)}  # fmt: skip
    assert len(lines) == 1, f"README: the lines that start with {start!r} differ: {lines}"
    return lines.pop()


def test_ci_runs_the_readmes_test_line():
    line = readme_line("scripts/setup --tests")
    assert line == "scripts/setup --tests && scripts/test"
    assert line in (ROOT / ".ci/run").read_text().splitlines()


def test_one_package_list_for_the_steps_the_preflight_and_the_set_up():
    listed = set(host_packages.debian_packages("lab"))
    assert set(load_balancer.PACKAGES + backend.PACKAGES) <= listed  # no step reaches for apt
    assert set(lab.PACKAGES) == listed
    for purpose in ("vmlab", "tests"):
        assert host_packages.debian_packages(purpose)
    setup = (ROOT / "scripts/setup").read_text()
    assert "scripts/debian-packages.txt" in setup and "apt-get install" not in (ROOT / ".ci/run").read_text()


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_the_readme_line_sets_up_and_starts_the_lab_on_a_fresh_debian(suite):
    """On Debian 12 and on Debian 13 (haproxy 3.0, keepalived 2.3, the default image's release)."""
    need_root_and("mmdebstrap", "unshare", "pivot_root", "ip")
    line = readme_line("scripts/setup --lab")
    assert line == "scripts/setup --lab && scripts/netns-lab up --config Pulumi.dev.yaml"
    # files the lab's steps write on a node: none may reach this host (a chroot'ed run once
    # wrote them to the host's /etc, through nodes entered at their mount namespace's root)
    node_files = [Path(f) for f in (PATHS["LB_SYSCTL_CONF"], PATHS["TPROXY_BIN"])]
    before = {f: f.exists() for f in node_files}
    # then the proof, and the set-up once more: it installs nothing the second time
    command = f"{line} && scripts/netns-lab verify --read-only --config Pulumi.dev.yaml && scripts/setup --lab"
    p = subprocess.run(
        [str(ROOT / "scripts/fresh-root"), "--suite", suite, "run", command],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    # the set-up said what it installed: python3 and the daemons are not in a minbase root
    (installing,) = re.findall(r"setup: installing (\d+) Debian packages for lab: (.*)", out)
    assert {"python3", "python3-yaml", "haproxy", "keepalived", "apache2", "iptables"} <= set(installing[1].split())
    assert int(installing[0]) == len(installing[1].split())
    assert f"setup: all {len(lab.PACKAGES)} Debian packages for lab are installed" in out
    assert "setup: haproxy keepalived apache2 run only inside the lab's nodes" in out
    # up, then every read-only check of the dev stack: 13 pass, and the two spread rows skip
    # (read-only: clearing the stick tables to measure spread would move clients)
    assert "lab halab is up: VIP 192.168.69.110" in out, out[-3000:]
    assert re.search(r"^13 passed, 0 failed, 2 skipped$", out, re.M), out[-3000:]
    assert re.search(r"^exactly one load balancer holds the VIP, the one expected +PASS", out, re.M), out[-3000:]
    assert {f: f.exists() for f in node_files} == before
