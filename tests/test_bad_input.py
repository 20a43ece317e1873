"""Every script that reads a stack file answers an unusable one the same way: exit status 2 and
one line naming the file (and, for broken YAML, the line and column), no traceback, and nothing
made; `scripts/setup` too, for its stack's file. (`pulumi up` and `scripts/verify` read the
stack through the Pulumi CLI, which parses the file itself; their own bad-config errors are in
test_pulumi_program.py and test_verify_ssh.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, setup_tree

# the file's text (None: no file), and the line that must name the problem after the file's path
CASES = {
    "broken YAML": (
        "config:\n  halab:vip: 192.168.69.110\n  halab:backends: [{name: www1\n",
        r":4:1: not valid YAML: .* \(while parsing a flow mapping from line 3, column 20\)$",
    ),
    "missing file": (None, re.escape(": no such file")),
    "a list at the top level": ("- config\n- halab:vip\n", re.escape(": the top level is a list; a stack file is")),
    "config without halab: keys": (
        "config:\n  ha-lb-lab:vip: 10.0.0.1\n",
        re.escape(": config: has no halab: keys (found ha-lb-lab:vip); this project reads halab:<key>"),
    ),
    "config that is not a mapping": ("config: [halab:vip]\n", re.escape(": config: is a list; it must be a mapping")),
}

SCRIPTS = {
    "render": lambda f, tmp: ["scripts/render", "--config", f, "--out", str(tmp / "out")],
    "netns-lab": lambda f, tmp: ["scripts/netns-lab", "up", "--config", f],
    "vm-lab": lambda f, tmp: ["scripts/vm-lab", "up", "--config", f],
    "bench": lambda f, tmp: ["scripts/bench", "--quick", "--config", f, "--out", str(tmp / "bench.md")],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unusable_stack_file_is_one_line_and_exit_2(script, case, tmp_path):
    text, expected = CASES[case]
    f = tmp_path / "Pulumi.bad.yaml"
    if text is not None:
        f.write_text(text)
    p = subprocess.run(
        [sys.executable, *SCRIPTS[script](str(f), tmp_path)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stdout == "", p.stdout + p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith(str(f)) and re.search(expected, line), line
    assert sorted(x.name for x in tmp_path.iterdir()) == (["Pulumi.bad.yaml"] if text is not None else [])


@pytest.mark.parametrize("mode", [[], ["--check"]])
@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0] is not None])
def test_setup_refuses_an_unusable_stack_file_before_anything(case, mode, tmp_path):
    """`scripts/setup --stack bad` with Pulumi.bad.yaml beside it: the same one line and exit 2,
    before the host checks and with nothing made (.halab-env, .pulumi-state, the passphrase).
    A stack with no file yet is no error: setup creates new stacks."""
    text, expected = CASES[case]
    tree = tmp_path / "tree"
    setup_tree(tree)
    os.symlink(ROOT / ".venv", tree / ".venv")
    f = tree / "Pulumi.bad.yaml"
    f.write_text(text)
    p = subprocess.run(
        [str(tree / "scripts/setup"), *mode, "--stack", "bad"], check=False, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stdout == "", p.stdout + p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith(str(f)) and re.search(expected, line), line
    assert sorted(x.name for x in tree.iterdir()) == [".venv", "Pulumi.bad.yaml", "Pulumi.yaml", "scripts"]
