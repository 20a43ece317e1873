"""A namespace-lab node: what a VM is to the Pulumi path, on this host.

Each node has its own network, PID and mount namespace. `/etc`, `/usr/local` and `/var` are
copy-on-write overlays of the host's (the packages are there, every write stays in the node);
`/run` and `/tmp` are fresh. So the step scripts run unchanged and see only this node: its
pidfiles, its processes (`pidof` and `/proc` see no other node), its sockets and its routes.
Nothing is written to the host's own filesystem or network namespace but the empty mount
point directory, removed on `destroy`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERLAID = ("/etc", "/usr/local", "/var")
FRESH = ("/run", "/tmp")

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


def _python() -> str:
    """An interpreter path that stays visible once /tmp and /run are the node's own."""
    exe = os.path.realpath(sys.executable)
    return "/usr/bin/python3" if exe.startswith(FRESH) else exe


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
    lines.append(f"exec {shlex.quote(_python())} -c {shlex.quote(PID1)}")
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
        scratch = Path(tempfile.mkdtemp(prefix=f"halab-{netns}-"))
        try:
            holder = subprocess.Popen(
                ["ip", "netns", "exec", netns, "unshare", "--mount", "--pid", "--uts", "--fork", "--mount-proc",
                 "--propagation", "private", "bash", "-c", _setup_script(str(scratch))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, cwd="/",
            )  # fmt: skip
            node = cls(netns, cls._wait_pid1(holder, timeout), scratch)
            node._holder = holder
            if hostname:
                node.run(["hostname", hostname])
            return node
        except BaseException:
            cls._cleanup(netns, None, scratch)
            raise

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
        """A command line that runs `cmd` inside this node (root, cwd /)."""
        return ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--net", "--uts", "--wd=/", "--", *cmd]

    def run(
        self, cmd: list[str] | str, *, input: str | None = None, check: bool = True, timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Runs a command (a string goes to `bash -c`); a failure raises with its output."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        p = subprocess.run(
            self.argv(argv), check=False, input=input, capture_output=True, text=True, timeout=timeout,
            env={**base, **(env or {})},
        )  # fmt: skip
        if check and p.returncode != 0:
            raise NodeError(
                f"[{self.netns}] {' '.join(argv)[:200]} exited {p.returncode}\n"
                f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
            )
        return p

    def run_bundle(self, bundle: str, *, check: bool = True, env: dict[str, str] | None = None):
        """Runs a step bundle (halab.plan.Step.bundle) as root, as `sudo bash -s` does on a VM."""
        return self.run(["bash", "-s"], input=bundle, check=check, env=env)

    def destroy(self) -> None:
        self._cleanup(self.netns, self.pid, self.scratch)

    @staticmethod
    def _cleanup(netns: str, pid: int | None, scratch: Path) -> None:
        """Kills every process of the node (PID 1 dying kills its PID namespace) and removes
        the namespace and the mount point. Safe to call twice."""
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        if Path(f"/run/netns/{netns}").exists():
            subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
