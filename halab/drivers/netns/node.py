"""A namespace-lab node: what a VM is to the Pulumi path, on this host.

Each node has its own network, PID and mount namespace. `/etc`, `/usr/local` and `/var` are
copy-on-write overlays of the host's (the packages are there, every write stays in the node);
`/run` and `/tmp` are fresh. So the step scripts run unchanged and see only this node: its
pidfiles, its processes (`pidof` and `/proc` see no other node), its sockets and its routes.
Nothing is written to the host's own filesystem or network namespace but the node's empty
mount point under /run/halab/nodes/, removed on `destroy`. A node is found again by its
namespace name alone (`NsNode.attach`, `destroy_netns`), so a later process can tear down what
an earlier, failed one made.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

OVERLAID = ("/etc", "/usr/local", "/var")
FRESH = ("/run", "/tmp")
SCRATCH_ROOT = Path("/run/halab/nodes")

# PID 1 of the node: reaps orphans (daemons that double-fork end up here) and exits on SIGTERM.
PID1 = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.5)\n"
)


class NodeError(RuntimeError):
    pass


OWN_NAME = 'grep -qw -- "$1" /etc/hosts || printf "127.0.1.1\\t%s\\n" "$1" >>/etc/hosts'


def python_path() -> str:
    """An interpreter path that stays visible once /tmp and /run are the node's own."""
    exe = os.path.realpath(sys.executable)
    return "/usr/bin/python3" if exe.startswith(tuple(d + "/" for d in FRESH)) else exe


def _setup_script(scratch: str) -> str:
    lines = ["set -eu", f"mount -t tmpfs -o mode=0700 halab-node {shlex.quote(scratch)}"]
    for d in OVERLAID:
        up, work = f"{scratch}/upper{d}", f"{scratch}/work{d}"
        lines += [
            f"mkdir -p {up} {work}",
            f"mount -t overlay halab-{d.strip('/').replace('/', '-')} -o lowerdir={d},upperdir={up},workdir={work} {d}",
        ]
    for d in FRESH:
        lines.append(f"mount -t tmpfs -o mode=0755 halab-run {d}")
    lines.append("chmod 1777 /tmp")
    lines.append("mkdir -m 1777 /run/lock  # as a booted system has it (systemd-tmpfiles)")
    lines.append("ip link set lo up")
    lines.append(f"exec {shlex.quote(python_path())} -c {shlex.quote(PID1)}")
    return "\n".join(lines)


def veth(a: NsNode, a_name: str, b: NsNode, b_name: str) -> None:
    """A cable between two nodes; neither end ever exists in the host's namespace."""
    subprocess.run(
        ["ip", "-n", a.netns, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.netns],
        check=True,
    )
    for node, name in ((a, a_name), (b, b_name)):
        node.run(["ip", "link", "set", name, "up"])


class NsNode:
    """A running node. `run` executes a command inside all three of its namespaces."""

    def __init__(self, netns: str, pid: int, scratch: Path):
        self.netns = netns
        self.pid = pid  # host PID of the node's PID 1
        self.scratch = scratch

    @classmethod
    def create(cls, netns: str, hostname: str | None = None, timeout: float = 10.0) -> NsNode:
        if Path(f"/run/netns/{netns}").exists():
            raise NodeError(f"network namespace {netns} already exists")
        subprocess.run(["ip", "netns", "add", netns], check=True)
        scratch = SCRATCH_ROOT / netns
        try:
            make_tree(scratch)
            holder = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    "unshare",
                    "--mount",
                    "--pid",
                    "--uts",
                    "--fork",
                    "--mount-proc",
                    "--propagation",
                    "private",
                    "bash",
                    "-c",
                    _setup_script(str(scratch)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                cwd="/",
            )
            node = cls(netns, cls._wait_pid1(holder, timeout), scratch)
            if hostname:
                node.run(["hostname", hostname])
                # its name resolves without DNS, as on an installed system (127.0.1.1, Debian's
                # installer and cloud-init): the lab has no resolver, and `hostname -f` (the
                # snakeoil certificate's make-ssl-cert) waited 5 s for one on every backend
                node.run(["bash", "-c", OWN_NAME, "_", hostname])
            return node
        except BaseException:
            cls._cleanup(netns, None, scratch)
            raise

    @classmethod
    def attach(cls, netns: str) -> NsNode | None:
        """The running node of that namespace, or None (absent, or its PID 1 is gone)."""
        pid = _pid1_of(netns)
        return cls(netns, pid, SCRATCH_ROOT / netns) if pid else None

    @staticmethod
    def _wait_pid1(holder: subprocess.Popen, timeout: float) -> int:
        """The host PID of the python PID 1 inside, once the mounts are done and it runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if holder.poll() is not None:
                err = holder.stderr.read().decode() if holder.stderr else ""
                raise NodeError(f"node setup failed: {err.strip()}")
            for child in Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split():
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip().startswith("python"):
                        return int(child)
                except OSError:
                    pass
            time.sleep(0.05)
        raise NodeError(f"node did not start within {timeout}s")

    def argv(self, cmd: list[str]) -> list[str]:
        """A command line that runs `cmd` inside this node (root, cwd /). `--root`: entering a mount
        namespace moves a process to that namespace's root, which is not the node's when the lab
        runs in a chroot (scripts/fresh-root caught steps writing to the outer /etc)."""
        return ["nsenter", f"--target={self.pid}", "--mount", "--root", "--pid", "--net", "--uts", "--wd=/", "--", *cmd]

    def run(
        self,
        cmd: list[str] | str,
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command (a string goes to `bash -c`); a failure raises with its output."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        p = subprocess.run(
            self.argv(argv),
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**base, **(env or {})},
        )
        if check and p.returncode != 0:
            raise NodeError(
                f"[{self.netns}] {' '.join(argv)[:200]} exited {p.returncode}\n"
                f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
            )
        return p

    def run_bundle(self, bundle: str, *, check: bool = True, env: dict[str, str] | None = None):
        """Runs a step bundle (halab.core.step.Step.bundle) as root, as `sudo bash -s` does on a VM."""
        return self.run(["bash", "-s"], input=bundle, check=check, env=env)

    def destroy(self) -> None:
        self._cleanup(self.netns, self.pid, self.scratch)

    @staticmethod
    def _cleanup(netns: str, pid: int | None, scratch: Path) -> None:
        destroy_netns(netns)


def _pid1_of(netns: str) -> int | None:
    """The host PID of the node's PID 1: in the namespace, and PID 1 of its own PID namespace."""
    if not Path(f"/run/netns/{netns}").exists():
        return None
    p = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    for pid in p.stdout.split():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                    return int(pid)
        except OSError:
            continue
    return None


def _running(pid: int) -> bool:
    """Exists and is not a zombie (a killed child of ours stays a zombie until reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def make_tree(path: Path) -> None:
    """`mkdir -p` that survives labs coming up and down at once: another lab's `down` removes
    a shared parent (/run/halab) the moment it is empty, which can fall between this call
    making that parent and making its child (the benchmark's labs come up in parallel); or
    between making it and checking it is there (pathlib then says it exists)."""
    for _ in range(10):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except (FileNotFoundError, FileExistsError):
            continue
    path.mkdir(parents=True, exist_ok=True)


def remove_tree(path: Path, *parents: Path) -> None:
    """Removes `path`, then each of `parents` that is left empty (another lab may still use one)."""
    shutil.rmtree(path, ignore_errors=True)
    for d in parents:
        try:
            d.rmdir()
        except OSError:
            pass


def destroy_netns(netns: str) -> bool:
    """Kills every process in the namespace (its PID 1 first: that ends its PID namespace),
    deletes the namespace and the node's mount point. Safe to call twice; True if it found any."""
    found = Path(f"/run/netns/{netns}").exists()
    for _ in range(3):
        p = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
        pids = [int(x) for x in p.stdout.split()]
        if not pids:
            break
        pid1 = _pid1_of(netns)
        for pid in ([pid1] if pid1 else []) + pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    if found:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    scratch = SCRATCH_ROOT / netns
    found = found or scratch.exists()
    remove_tree(scratch, SCRATCH_ROOT, SCRATCH_ROOT.parent)
    return found
