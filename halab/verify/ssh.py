"""The verifier's second transport: SSH to the deployed VMs, the way `pulumi up` reaches them.

A node is reached as the stack's admin user with the stack's key, and runs probes and drills
through `sudo -n` (steps run as root; so do drills). Behind a remote libvirt host it is reached
through that host as a jump (`ProxyCommand ssh -W`), authenticated as you, as the program's
remote commands are. The client side (request sampler, curl) runs unprivileged on the client
host: this machine, or the jump host when the lab's subnet is only reachable from there.

One SSH connection per host carries every command (ControlMaster), so the verifier's 50 ms
probes of the VIP's holders cost a channel each, not a handshake. Host keys are trusted on first
use, per run (the VMs get new keys at every rebuild, on the same addresses), as pulumi-command
does; a jump host's key is also checked against your own known_hosts.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SshError(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoint:
    address: str | None  # None: this machine, no SSH
    user: str | None = None
    port: int = 22
    identity: str | None = None  # a private key file; None: your agent and default keys
    jump: Endpoint | None = None
    sudo: bool = False  # commands run as root (sudo -n)
    shared: bool = True  # one connection carries every command

    @classmethod
    def parse(cls, user_host_port: str, identity: str | None = None) -> Endpoint:
        """`[user@]host[:port]`, as the config's libvirt URIs name a jump host."""
        user_host, _, port = user_host_port.rpartition(":") if ":" in user_host_port else (user_host_port, "", "22")
        user, _, host = user_host.rpartition("@")
        return cls(host, user or None, int(port), identity)


class SshTransport:
    python = "python3"

    def __init__(self, endpoints: dict[str, Endpoint], connect_timeout: int = 10, netns: str | None = None):
        self.endpoints = endpoints
        self.connect_timeout = connect_timeout
        # the network namespace every command runs in (the VM lab's hypervisor), or this one
        self.prefix = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []
        self.dir = Path(tempfile.mkdtemp(prefix="halab-ssh-"))

    # -- the ssh command line ------------------------------------------------------------------
    def options(self, ep: Endpoint) -> list[str]:
        known = str(self.dir / "known_hosts")
        if not ep.sudo:  # a host of yours (a jump host), not a VM: your known_hosts count too
            known += " ~/.ssh/known_hosts"
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        opts += ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known}"]
        opts += ["-o", "LogLevel=ERROR", "-p", str(ep.port)]
        if ep.shared:
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.dir}/%C", "-o", "ControlPersist=300"]
        if ep.identity:
            opts += ["-i", ep.identity, "-o", "IdentitiesOnly=yes"]
        if ep.user:
            opts += ["-l", ep.user]
        if ep.jump is not None:
            # the jump only carries this connection: not shared (its %C would be the outer ssh's);
            # %h:%p are the node's, filled in by the outer ssh
            jump = dataclasses.replace(ep.jump, shared=False)
            proxy = ["ssh", *self.options(jump), "-W", "%h:%p", str(jump.address)]
            opts += ["-o", "ProxyCommand=" + shlex.join(proxy)]
        return opts

    def argv(self, host: str, cmd: list[str] | str) -> list[str]:
        ep = self.endpoints[host]
        words = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if ep.address is None:
            return self.prefix + words
        remote = shlex.join((["sudo", "-n", "--"] if ep.sudo else []) + words)
        return [*self.prefix, "ssh", *self.options(ep), str(ep.address), remote]

    # -- the Transport protocol ----------------------------------------------------------------
    def run(self, host, cmd, *, input=None, check=True, timeout=60.0):
        argv = self.argv(host, cmd)
        # its own session: a Ctrl-C stops the verifier, whose drills then restore over SSH
        p = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
            env={**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{PATH}"},
        )
        if check and p.returncode != 0:
            raise SshError(
                f"[{host}] {cmd if isinstance(cmd, str) else shlex.join(cmd)}"[:200] + f" exited {p.returncode}\n"
                f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
            )
        return p

    def spawn(self, host, cmd):
        return subprocess.Popen(
            self.argv(host, cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    # -- connections ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Opens every host's connection at once, each checked (sudo too): one error lists every
        host that cannot be reached, and why."""
        errors: dict[str, str] = {}

        def one(host: str) -> None:
            ep = self.endpoints[host]
            try:
                p = self.run(host, ["true"], check=False, timeout=self.connect_timeout * 3 + 5)
                if p.returncode != 0:
                    errors[host] = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            except subprocess.TimeoutExpired:
                errors[host] = "timed out"
            if host in errors:
                via = f" via {ep.jump.address}" if ep.jump else ""
                user = f"{ep.user}@" if ep.user else ""
                errors[host] = f"{host} ({user}{ep.address}{via}): {errors[host]}"

        threads = [threading.Thread(target=one, args=(h,)) for h in self.endpoints]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise SshError("cannot reach these hosts over SSH:\n" + "\n".join(f"  - {e}" for e in errors.values()))

    def close(self) -> None:
        for ep in self.endpoints.values():
            if ep.address is not None and ep.shared:
                subprocess.run(
                    [*self.prefix, "ssh", *self.options(ep), "-O", "exit", str(ep.address)],
                    capture_output=True,
                    check=False,
                    timeout=10,
                    start_new_session=True,
                )
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
