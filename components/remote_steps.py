"""The plan's steps for one node, as pulumi-command remote Commands run in order over SSH.

Each Command pipes the step's bundle to `sudo env HALAB_GUEST=<node> bash -s` (the steps refuse
another guest). The bundle's content hash is the trigger, so a step re-runs exactly when what it
applies changes; the steps' own scripts make a re-run harmless. A bundle that holds a secret is
a secret Output (encrypted in the state). The node's first step, its library, is the one
bundle copied as a file and run from there (`_library_command`): the state keeps its hash.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command.remote as remote

from components.cache import user_cache
from halab.core import plan
from halab.core.model import Credentials, Lab, Node
from halab.core.step import LIBRARY_STEP, Step

# Where a node's library bundle is copied to, relative to the SSH user's home (where SFTP and an
# SSH command start).
LIBRARY_COPY_DIR = ".cache/halab"
# cloud images boot in 20-60 s: keep dialling SSH for up to ~10 minutes before failing.
SSH_DIAL_ATTEMPTS = 60
SSH_DIAL_TIMEOUT_S = 10


def ssh_agent_problem(env: Mapping[str, str] = os.environ) -> str | None:
    """Why every Command would fail, or None: pulumi-command v1.2.1 dials $SSH_AUTH_SOCK for
    every connection whenever it is set, private key or not, and returns the dial error before
    its retries (remote/connection.go 131-145, 191-194; connection_unix.go 12-20). A stale
    socket (a login's agent gone, under tmux or `sudo -E`) would fail the first step of every
    node after the VMs exist. The program and the provider inherit the CLI's environment, so
    the program sees the same socket, and says so before anything is created."""
    path = env.get("SSH_AUTH_SOCK", "")
    if not path:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
    except OSError as e:
        return (
            f"SSH_AUTH_SOCK={path}: no SSH agent answers there ({e.strerror or e}); pulumi-command dials it "
            "for every step and would fail each one. Unset it (env -u SSH_AUTH_SOCK pulumi up), or start an "
            "agent (eval $(ssh-agent); ssh-add) if a qemu+ssh:// host needs your key"
        )
    return None


def connection(lab: Lab, node: Node, private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    """SSH to the node; through its libvirt host as a jump when that host's URI is qemu+ssh://.

    The jump host authenticates the user's own key through their SSH agent, which
    pulumi-command finds in its own environment (SSH_AUTH_SOCK, connection.go): the socket's
    path is not an input, so a new login (a new path) changes no step and re-runs none."""
    proxy = None
    jump_host = lab.libvirt.hypervisor(node.hypervisor).jump_host
    if jump_host:
        user_host, _, port = jump_host.rpartition(":")
        user, _, host = user_host.rpartition("@")
        proxy = remote.ProxyConnectionArgs(
            host=host,
            port=int(port),
            user=user or None,
            dial_error_limit=SSH_DIAL_ATTEMPTS,
            per_dial_timeout=SSH_DIAL_TIMEOUT_S,
        )
    return remote.ConnectionArgs(
        host=str(node.address),
        user=lab.ssh.user,
        private_key=private_key,
        dial_error_limit=SSH_DIAL_ATTEMPTS,
        per_dial_timeout=SSH_DIAL_TIMEOUT_S,
        proxy=proxy,
    )


@dataclass
class StepCommands:
    commands: dict[str, remote.Command]
    """By step name, in the order they run."""
    content: pulumi.Output[str]
    """A hash of every step's triggers (bundles and guest): it changes when any step runs again
    for what it applies, the way a serving step knows to run after them (secret when a bundle
    is)."""


def create_steps(
    parent: pulumi.Resource,
    name: str,
    lab: Lab,
    node: Node,
    conn: remote.ConnectionArgs,
    credentials: Credentials,
    library_files: LibraryFiles,
    first_after: Sequence[pulumi.Resource],
    guest_id: pulumi.Input[str],
    extra_after: dict[str, pulumi.Input[Sequence[pulumi.Resource]]] | None = None,
    steps_of: Callable[[Lab, Node, Credentials], Sequence[Step]] | None = None,
    extra_triggers: Sequence[pulumi.Input[str]] = (),
) -> StepCommands:
    """One Command per step of `steps_of` (the node's plan: plan.host_steps unless given), each
    after the previous; `extra_after[step]` adds dependencies, `extra_triggers` more reasons to
    run again.

    Each step's triggers are its bundle's hash and the guest's identity (the domain's ID): a
    replaced guest (a new image, a new disk size, a domain deleted out of band and re-created
    by `pulumi up --refresh`) is a blank machine, and every step runs on it again."""
    commands: dict[str, remote.Command] = {}
    triggers: list[pulumi.Input[str]] = []
    previous: list[pulumi.Resource] = list(first_after)
    for step in (steps_of or plan.host_steps)(lab, node, credentials):  # the plan, built once
        bundle: pulumi.Input[str] = step.bundle()
        digest: pulumi.Input[str] = step.digest()
        if step.secret:  # its files hold a password: the state encrypts both
            bundle, digest = pulumi.Output.secret(bundle), pulumi.Output.secret(digest)
        extra = (extra_after or {}).get(step.name, ())
        after: pulumi.Input[Sequence[pulumi.Resource]] = (
            extra.apply(lambda e, p=previous: p + list(e))
            if isinstance(extra, pulumi.Output)
            else previous + list(extra)
        )
        if step.name == LIBRARY_STEP:
            trig = [digest, guest_id, *extra_triggers]
            cmd = _library_command(parent, name, node, conn, step, library_files, after, trig)
        else:
            cmd = remote.Command(
                f"{name}-{step.name}",
                connection=conn,
                create=f"sudo env HALAB_GUEST={node.name} bash -s",  # lib.sh: need_guest
                stdin=bundle,
                triggers=[digest, guest_id, *extra_triggers],
                opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
            )
        commands[step.name] = cmd
        triggers += [digest, guest_id, *extra_triggers]
        previous = [cmd]
    content = pulumi.Output.all(*triggers).apply(lambda t: hashlib.sha256("\n".join(t).encode()).hexdigest())
    return StepCommands(commands, content)


def _library_command(
    parent: pulumi.Resource,
    name: str,
    node: Node,
    conn: remote.ConnectionArgs,
    step: Step,
    files: LibraryFiles,
    after: pulumi.Input[Sequence[pulumi.Resource]],
    triggers: list[pulumi.Input[str]],
) -> remote.Command:
    """The node's library step, its bundle copied as a file (a CopyToRemote of a FileAsset),
    then run from there: the state holds the file's path and hash, not its 17 KB (twice, as an
    input and an output) per node, most of the state at 100 backends. The bundle is the same
    bytes a namespace-lab node runs. The copy and the run have the same triggers, so they run
    again together; the run checks the file's hash first, and keeps only its own version."""
    if step.secret:
        raise ValueError(f"{node.name}/{step.name}: a library bundle holds no secret; a file copy would not encrypt it")
    digest = step.digest()
    copied = f"{LIBRARY_COPY_DIR}/library-{digest}.sh"
    copy = remote.CopyToRemote(
        f"{name}-{step.name}-copy",
        connection=conn,
        source=pulumi.FileAsset(str(files.write(step))),
        remote_path=copied,
        triggers=triggers,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )
    run = (
        f'[ "$(sha256sum <{copied})" = "{digest}  -" ] || {{ echo "[{node.name}/{step.name}] error: ~/{copied} '
        f'is not the library that was copied (sha256 {digest}): nothing was changed" >&2; exit 1; }}; '
        f"sudo env HALAB_GUEST={node.name} bash {copied} && "
        f"find {LIBRARY_COPY_DIR} -maxdepth 1 -name 'library-*.sh' ! -name 'library-{digest}.sh' -delete"
    )
    return remote.Command(
        f"{name}-{step.name}",
        connection=conn,
        create=run,
        triggers=triggers,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[copy]),
    )


class LibraryFiles:
    """Each node's library bundle as a local file, for the engine to read (a FileAsset: hashed by
    the engine, copied by the provider). One directory per stack in the user's cache, each file
    named by its sha256 and renamed into place whole. `prune`, once every node has written its
    own, removes what this run no longer uses: the engine reads only the assets a run registers
    (the state keeps the old ones' hashes), and Pulumi runs one update of a stack at a time."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.written: set[Path] = set()

    @classmethod
    def for_stack(cls, project: str, stack: str) -> LibraryFiles:
        return cls(user_cache() / "library" / f"{project}.{stack}")

    def write(self, step: Step) -> Path:
        path = self.directory / f"{step.digest()}.sh"
        data = step.bundle().encode()
        if not (path.is_file() and path.read_bytes() == data):
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        self.written.add(path)
        return path

    def prune(self) -> None:
        for old in self.directory.glob("*.sh") if self.directory.is_dir() else ():
            if old not in self.written:
                old.unlink(missing_ok=True)
