"""scripts/setup names exactly what a host lacks, and changes nothing when something is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, setup_tree

from halab.drivers import host_packages

BASIC = ("bash", "python3", "sed", "head", "grep", "id", "cat", "dirname", "printf", "sort")


# libvirt's default pool, as `virsh pool-dumpxml default` shows it
VIRSH = (
    'case "$3" in version) exit 0;; '
    'pool-dumpxml) echo "<pool type=\'dir\'>"; echo "<target><path>/var/lib/libvirt/images</path></target>";; esac'
)


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
    for needed in ("the Pulumi CLI", "libvirt and its client", "mkisofs", "xsltproc", "an SSH client", "curl"):
        assert needed in p.stderr, f"{needed!r} not reported:\n{p.stderr}"
    assert sorted(p.name for p in ROOT.iterdir()) == before


def test_setup_check_passes_when_everything_is_there(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    # stand-ins that answer like the real tools
    for tool, script in {
        "pulumi": "echo v3.272.0",
        "virsh": VIRSH,
        "mkisofs": "exit 0",
        "xsltproc": "exit 0",
        "ssh": "exit 0",
        "curl": "exit 0",
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
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom halab.drivers.entry import use_project_venv\n"
        f"use_project_venv(__import__('pathlib').Path({str(ROOT)!r}))\nprint(sys.prefix)\n"
    )
    out = subprocess.run([other, str(script)], capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.realpath(out) == os.path.realpath(venv)


def setup_check_in(tree, bin_dir, home, stack: str = "dev", env: dict | None = None):
    """scripts/setup --check run from a copy of the script in `tree` (its own stack files)."""
    setup_tree(tree)
    return subprocess.run(
        [str(tree / "scripts/setup"), "--check", "--stack", stack],
        env={"PATH": str(bin_dir), "HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def stand_ins(bin_dir, **scripts: str) -> None:
    for tool, script in scripts.items():
        f = bin_dir / tool
        f.write_text(f"#!/bin/bash\n{script}\n")
        f.chmod(0o755)


HOST_TOOLS = {
    "pulumi": "echo v3.272.0",
    "xsltproc": "exit 0",
    "virsh": VIRSH,
    "ssh": "exit 0",
}


def test_setup_check_wants_a_pulumi_cli_that_replaces_dependents_as_the_program_needs(tmp_path):
    """Before 3.163.0 the engine ignored a dependent's replaceOnChanges when it replaced a
    delete-before-replace resource (pulumi #19188): a new lab network would be deleted under
    its running guests. The minimum is Pulumi.yaml's requiredPulumiVersion."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    stand_ins(bin_dir, **{**HOST_TOOLS, "pulumi": "echo v3.162.9"}, mkisofs="exit 0")
    p = setup_check_in(tmp_path / "tree", bin_dir, tmp_path)
    assert p.returncode == 1 and "the Pulumi CLI is 3.162.9; 3.163.0 or newer is needed" in p.stderr, p.stderr
    stand_ins(bin_dir, pulumi="echo v3.163.0")
    assert "Pulumi CLI" not in setup_check_in(tmp_path / "tree", bin_dir, tmp_path).stderr


def test_setup_check_wants_a_directory_pool(tmp_path):
    """Each root disk is attached by its volume's key as a path (the domain's XSLT): a path in
    a directory pool only. An LVM pool is named before anything is created."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    lvm = VIRSH.replace("type='dir'", "type='logical'").replace("/var/lib/libvirt/images", "/dev/vg")
    stand_ins(bin_dir, **{**HOST_TOOLS, "virsh": lvm}, mkisofs="exit 0")
    p = setup_check_in(tmp_path / "tree", bin_dir, tmp_path)
    assert p.returncode == 1 and "libvirt pool 'default' is not a directory pool" in p.stderr, p.stderr


def test_setup_check_wants_mkisofs_itself(tmp_path):
    """The provider runs `mkisofs` by that name: genisoimage or xorriso under their own names
    do not count."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    stand_ins(bin_dir, **HOST_TOOLS, genisoimage="exit 0", xorriso="exit 0")
    p = setup_check_in(tmp_path / "tree", bin_dir, tmp_path)
    assert p.returncode == 1 and "mkisofs, which the libvirt provider runs" in p.stderr, p.stderr


def test_setup_check_wants_a_remote_libvirt_host_in_known_hosts(tmp_path):
    """The provider checks ~/.ssh/known_hosts for a qemu+ssh:// host ("knownhosts: key is unknown")."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    os.symlink(shutil.which("ssh-keygen"), bin_dir / "ssh-keygen")
    stand_ins(bin_dir, **HOST_TOOLS, mkisofs="exit 0")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Pulumi.remote.yaml").write_text("config:\n  halab:libvirtUri: qemu+ssh://ops@hv.example/system\n")
    p = setup_check_in(tree, bin_dir, tmp_path, stack="remote")
    assert "hv.example is not in ~/.ssh/known_hosts" in p.stderr, p.stderr
    assert "ssh-keyscan hv.example" in p.stderr
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh/known_hosts").write_text("hv.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHYk\n")
    p = setup_check_in(tree, bin_dir, tmp_path, stack="remote")
    assert "known_hosts" not in p.stderr, p.stderr


def test_setup_with_a_tool_missing_creates_nothing(tmp_path):
    """The default mode (everything) checks first: with the Pulumi CLI missing it stops, and the
    venv, the env file, the state folder and its passphrase are not there afterwards."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    stand_ins(bin_dir, **{k: v for k, v in HOST_TOOLS.items() if k != "pulumi"}, mkisofs="exit 0")
    tree = tmp_path / "tree"
    setup_tree(tree)
    shutil.copy(ROOT / "requirements.txt", tree / "requirements.txt")
    shutil.copy(ROOT / "Pulumi.dev.yaml", tree / "Pulumi.dev.yaml")
    before = sorted(p.name for p in tree.iterdir())
    p = subprocess.run(
        [str(tree / "scripts/setup"), "--stack", "dev"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "the Pulumi CLI" in p.stderr and "nothing was changed" in p.stderr, p.stderr
    assert sorted(p.name for p in tree.iterdir()) == before
    for made in (".venv", ".halab-env", ".pulumi-state", ".pulumi-passphrase"):
        assert not (tree / made).exists(), made


def test_a_lab_test_fails_naming_what_is_missing_where_labs_must_run(tmp_path):
    """CI sets HALAB_REQUIRE_LABS=1: a lab test whose prerequisite is missing (here keepalived,
    absent from PATH) fails and names it, where a developer's run skips it with the reason."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name != "keepalived" and not (bin_dir / name).exists():
                os.symlink(os.path.join(d, name), bin_dir / name)
    test = "tests/test_netns_lab.py::test_the_labs_are_separate"
    for required, outcome, code in (("1", "failed", 1), ("", "skipped", 0)):
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
            cwd=ROOT,
            env={**os.environ, "PATH": str(bin_dir), "HALAB_REQUIRE_LABS": required},
            capture_output=True,
            text=True,
            check=False,
        )
        out = p.stdout + p.stderr
        assert p.returncode == code and "command keepalived" in out, out
        assert (f"1 {outcome}" if outcome == "skipped" else "1 error") in out, out


def test_setup_without_apt_names_the_packages_to_install_and_changes_nothing(tmp_path):
    """On a host without apt-get (not Debian or Ubuntu), `--lab` says which packages the lab
    needs, from the one list, instead of failing somewhere later."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_basic_tools(bin_dir)
    for tool in ("tr", "dpkg-query"):
        if shutil.which(tool):
            os.symlink(os.path.realpath(shutil.which(tool)), bin_dir / tool)
    p = subprocess.run(
        [str(ROOT / "scripts/setup"), "--lab"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    line = p.stderr.strip()
    assert line.startswith("setup: no apt-get here; install these with this system's package manager:"), line
    assert line.split(":")[-1].split() == list(host_packages.debian_packages("lab"))


@pytest.mark.parametrize(
    ("args", "message"), [(["--bogus"], "unknown argument --bogus"), (["--stack"], "--stack needs a stack name")]
)
def test_setup_names_a_bad_argument(args, message):
    p = subprocess.run([str(ROOT / "scripts/setup"), *args], capture_output=True, text=True, check=False)
    assert p.returncode == 2 and message in p.stderr and p.stdout == "", p.stdout + p.stderr
