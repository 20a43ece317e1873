"""Each node path is declared once (halab/node/steps/paths.sh) and written nowhere else: the steps
source the declaration, the core reads it (halab/node/paths.py), node files and templates get it
filled in. These tests grep the tree for every declared path, and for any path on a node that
two files name without declaring it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from halab.core import render
from halab.node import FILES, TEMPLATES
from halab.node.paths import DECLARATION, PATHS, fill

ROOT = Path(__file__).resolve().parent.parent
# Where code lives: everything a reader could write a path into, but the docs (prose for readers)
# and the recorded renders the template test compares against.
TREE = ("halab", "components", "scripts", "tests", "__main__.py")
SKIP = {DECLARATION, ROOT / "tests/stacks/rendered-before-jinja2.json"}
# A path on a node: what ha-lb-lab places, runs or reads there.
NODE_PATH = re.compile(r"(?<![A-Za-z0-9_.$}-])/(?:etc|run|var|usr/local)/[A-Za-z0-9_.@-]+(?:/[A-Za-z0-9_.@-]+)*")
# Paths two files name that are not a node's: the host's (the labs' state, libvirt's, the image
# build's) or a directory searched in PATH; each with why it is not declared.
NOT_NODE_PATHS = {
    "/run/netns": "the host's named network namespaces (ip netns), where the labs' nodes are found",
    "/run/halab": "the host's lab state (the namespace lab's, the VM lab's)",
    "/run/halab/labs": "the namespace lab's state on the host",
    "/var/cache/halab": "the host's image cache (the VM lab)",
    "/var/lib/libvirt/images": "the host's libvirt pool (the VM lab, setup)",
    "/var/log/libvirt/qemu": "the host's libvirt logs (the VM lab)",
    "/etc/apt/sources.list.d/debian.sources": "the image and fresh roots being built, on the host",
    "/etc/os-release": "the image and fresh roots being built, on the host",
    "/etc/hosts": "a namespace-lab node's and the SSH test's own name (the host's view)",
    "/usr/local": "the namespace lab's overlaid directories",
    "/usr/local/sbin": "PATH",
    "/usr/local/bin": "PATH",
}


def _files() -> list[Path]:
    found = []
    for top in TREE:
        p = ROOT / top
        for f in [p] if p.is_file() else sorted(p.rglob("*")):
            if f.is_file() and f not in SKIP and "__pycache__" not in f.parts:
                found.append(f)
    return found


def _named(text: str) -> set[str]:
    """The node paths a text names, a trailing dot (a sentence's end) left out."""
    return {m.rstrip(".") for m in NODE_PATH.findall(text)}


def offences(files: dict[str, str]) -> list[str]:
    """What breaks the rule in `files` (name -> text): a declared path written out, or an
    undeclared node path named by two files or more."""
    declared = set(PATHS.values())
    where: dict[str, list[str]] = {}
    for name, text in files.items():
        for path in _named(text):
            where.setdefault(path, []).append(name)
    out = [f"{p} (declared as {k}) is written in {sorted(where[p])}" for k, p in PATHS.items() if p in where]
    out += [
        f"{p} is named by {sorted(names)}: declare it in {DECLARATION.name}"
        for p, names in sorted(where.items())
        if p not in declared and p not in NOT_NODE_PATHS and len(names) > 1
    ]
    return out


def test_each_node_path_is_written_once_in_the_tree():
    files = {str(f.relative_to(ROOT)): f.read_text(errors="replace") for f in _files()}
    assert offences(files) == []


def test_the_check_sees_a_path_written_twice():
    """The rule above can fail: a declared path written out, and an undeclared one named by two
    files, are each found."""
    haproxy_cfg = PATHS["HAPROXY_CFG"]
    assert offences({"a.sh": f"cat {haproxy_cfg}\n"}) == [
        f"{haproxy_cfg} (declared as HAPROXY_CFG) is written in ['a.sh']"
    ]
    assert offences({"a.sh": "cat /etc/halab/new.conf\n", "b.py": '"/etc/halab/new.conf."'}) == [
        "/etc/halab/new.conf is named by ['a.sh', 'b.py']: declare it in paths.sh"
    ]
    assert offences({"a.sh": "cat /etc/halab/new.conf\n"}) == []  # named once: declared there


def test_bash_reads_the_declaration_as_python_does():
    """The steps source the file; Python parses it: the same names and paths either way."""
    script = f'set -euo pipefail; . "{DECLARATION}"; ' + "; ".join(f'echo "{k}=${k}"' for k in PATHS)
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert p.stdout.splitlines() == [f"{k}={v}" for k, v in PATHS.items()]


@pytest.mark.parametrize("name", sorted(f.name for f in FILES.iterdir()))
def test_every_node_file_is_filled(name):
    """A node file names a path by `@NAME@`: filled with a declared one, nothing left over."""
    text = render.node_file(name)
    assert "@" not in re.sub(r'"\$@"|\[@\]', "", text), name


def test_an_undeclared_name_fails_naming_it():
    with pytest.raises(KeyError, match=r"halab/node/files/x: @NO_SUCH_PATH@ is not declared in paths.sh"):
        fill("cat @NO_SUCH_PATH@\n", "halab/node/files/x")


def test_templates_name_paths_by_their_declared_names():
    """A template's `paths.NAME` is declared (StrictUndefined would fail the render anyway: this
    names the template)."""
    for t in sorted(TEMPLATES.glob("*.j2")):
        used = set(re.findall(r"paths\.([A-Z][A-Z0-9_]*)", t.read_text()))
        assert used <= set(PATHS), (t.name, used - set(PATHS))
