"""`command:remote:Command` as pulumi-command v1.2.1 runs it: dial SSH to the connection's
host (as its user, with its private key; host keys are not checked), retrying a failed dial
`dialErrorLimit` times with `perDialTimeout` each, then run `create` in a session of that same
connection, with `stdin` on its standard input. (The same connection matters: cloud-init
restarts sshd while a guest boots, and a second connection can be refused where the session of
the first one goes on.) A non-zero exit fails the resource, with its output. An update
(inputs changed, triggers not) runs `create` again, as there is no `update` command.

`command:remote:CopyToRemote` (`copy`) the same way: a file asset's bytes written at the remote
path (relative: to the user's home, where SFTP starts), its parent directories made first, an
existing file overwritten, as the provider's SFTP copy does (copyController.go sftpCopy).

ssh runs in the lab hypervisor's network namespace: the guests' addresses exist only there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class CommandError(RuntimeError):
    pass


@dataclass
class Result:
    stdout: str
    stderr: str


def ssh_argv(conn: dict[str, Any], key_file: str, control: str) -> list[str]:
    if conn.get("proxy"):
        raise CommandError("the VM lab's guests are local: a proxy (jump host) connection is not supported")
    timeout = int(conn.get("perDialTimeout") or 15)
    return [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={timeout}",
        "-o", "IdentitiesOnly=yes",
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={control}",
        "-o", "ControlPersist=600",
        "-i", key_file,
        "-p", str(int(conn.get("port") or 22)),
        "-l", conn.get("user") or "root",
        conn["host"],
    ]  # fmt: skip


def run_local(inputs: dict[str, Any], timeout: float = 1800) -> Result:
    """`command:local:Command` as pulumi-command runs it: `create` by its interpreter (sh -c when
    none is given), its `environment` added to the program's own, on the machine running the
    program. A non-zero exit fails the resource, with its output."""
    argv = [*(inputs.get("interpreter") or ["/bin/sh", "-c"]), inputs["create"]]
    env = {**os.environ, **(inputs.get("environment") or {})}
    p = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    if p.returncode != 0:
        raise CommandError(
            f"local command exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
        )
    return Result(p.stdout, p.stderr)


def copy(
    inputs: dict[str, Any], wrap: Callable[[list[str]], list[str]], log: Callable[[str], None] = lambda _: None
) -> None:
    """Copies the CopyToRemote's file asset (its `source`, as the state holds it) to `remotePath`."""
    path = shlex.quote(inputs["remotePath"])
    with open(inputs["source"]["path"]) as f:
        content = f.read()
    write = f'mkdir -p -- "$(dirname -- {path})" && cat >{path}'
    run({"connection": inputs["connection"], "copy": write, "stdin": content}, wrap, log, script="copy")


def run(
    inputs: dict[str, Any],
    wrap: Callable[[list[str]], list[str]],
    log: Callable[[str], None] = lambda _: None,
    timeout: float = 1800,
    script: str = "create",
) -> Result:
    """Runs the Command's `create` (or `script`: `delete`, from the state's inputs)."""
    conn = inputs["connection"]
    if not conn.get("privateKey"):
        raise CommandError(f"{conn.get('host')}: the VM lab needs a private key in the connection")
    with tempfile.TemporaryDirectory(prefix="halab-cmd-") as d:
        key_file = os.path.join(d, "key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            key = conn["privateKey"]
            f.write(key if key.endswith("\n") else key + "\n")
        base = ssh_argv(conn, key_file, os.path.join(d, "conn"))
        try:
            return _dial_and_run(inputs, base, wrap, log, timeout, script)
        finally:  # the connection ends with the command, as pulumi-command's
            subprocess.run(wrap([*base[:-1], "-O", "exit", base[-1]]), capture_output=True, check=False, timeout=30)


def _dial_and_run(
    inputs: dict[str, Any],
    base: list[str],
    wrap: Callable[[list[str]], list[str]],
    log: Callable[[str], None],
    timeout: float,
    script: str,
) -> Result:
    conn = inputs["connection"]
    limit = int(conn.get("dialErrorLimit") or 10)
    per_dial = int(conn.get("perDialTimeout") or 15)
    for attempt in range(1, limit + 1):
        started = time.monotonic()
        # the dial: opens the connection (its master) that the command's session then uses
        p = subprocess.run(wrap([*base, "true"]), capture_output=True, text=True, check=False, timeout=per_dial + 30)
        if p.returncode == 0:
            break
        if attempt == limit:
            raise CommandError(f"{conn['host']}: SSH dial failed {limit} times: {p.stderr.strip()}")
        if attempt == 1 or attempt % 6 == 0:
            log(f"waiting for SSH on {conn['host']} ({attempt}/{limit}: {p.stderr.strip()[:80]})")
        time.sleep(max(0.0, per_dial - (time.monotonic() - started)))
    p = subprocess.run(
        wrap([*base, inputs[script]]),
        input=inputs.get("stdin") or "",
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if p.returncode != 0:
        raise CommandError(
            f"{conn['host']}: `{inputs[script]}` exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}"
            f"\n--- stderr\n{p.stderr[-3000:]}"
        )
    return Result(p.stdout, p.stderr)
