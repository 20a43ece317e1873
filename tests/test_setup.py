"""scripts/setup names exactly what a host lacks, and changes nothing when something is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

BASIC = ("bash", "python3", "sed", "head", "grep", "id", "cat", "dirname", "printf")


def link_basic_tools(bin_dir) -> None:
    for tool in BASIC:
        os.symlink(sys.executable if tool == "python3" else os.path.realpath(shutil.which(tool)), bin_dir / tool)


def setup_check(bin_dir, home) -> subprocess.CompletedProcess[str]:
    """scripts/setup --check with nothing on PATH but bin_dir."""
    return subprocess.run(
        [str(ROOT / "scripts/setup"), "--check"],
        env={"PATH": str(bin_dir), "HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_setup_check_names_every_missing_tool(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    before = sorted(p.name for p in ROOT.iterdir())
    p = setup_check(bin_dir, tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "nothing was changed" in p.stderr
    for needed in ("the Pulumi CLI", "libvirt and its client", "mkisofs", "an SSH client"):
        assert needed in p.stderr, f"{needed!r} not reported:\n{p.stderr}"
    assert sorted(p.name for p in ROOT.iterdir()) == before


def test_setup_check_passes_when_everything_is_there(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    # stand-ins that answer like the real tools
    for tool, script in {
        "pulumi": "exit 0",
        "virsh": 'case "$3" in version) exit 0;; pool-dumpxml) echo "<path>/var/lib/libvirt/images</path>";; esac',
        "mkisofs": "exit 0",
        "ssh": "exit 0",
    }.items():
        f = bin_dir / tool
        f.write_text(f"#!/bin/bash\n{script}\n")
        f.chmod(0o755)
    p = setup_check(bin_dir, tmp_path)
    kvm_missing = not os.path.exists("/dev/kvm")
    assert p.returncode == (1 if kvm_missing else 0), p.stdout + p.stderr
    if kvm_missing:
        assert "/dev/kvm" in p.stderr and "halab:domainType: qemu" in p.stderr
    else:
        assert "has everything the lab needs" in p.stdout


def test_scripts_run_the_project_venv_whatever_python_starts_them(tmp_path):
    """`sudo scripts/bench` starts the system Python, which may hold some of the packages (PyYAML)
    and not others (pulumi): the scripts re-run themselves with .venv, the pinned packages."""
    other = shutil.which("python3", path="/usr/bin:/bin")
    venv = ROOT / ".venv"
    if other is None or not (venv / "bin" / "python").exists():
        pytest.skip("needs a Python outside .venv, and .venv (scripts/setup --venv)")
    script = tmp_path / "probe"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom halab.entry import use_project_venv\n"
        f"use_project_venv(__import__('pathlib').Path({str(ROOT)!r}))\nprint(sys.prefix)\n"
    )
    out = subprocess.run([other, str(script)], capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.realpath(out) == os.path.realpath(venv)
