"""The plan's steps for one node, as pulumi-command remote Commands run in order over SSH.

Each Command pipes the step's bundle to `sudo bash -s`. The bundle's content hash is the
trigger, so a step re-runs exactly when what it applies changes; the steps' own scripts make
a re-run harmless. A bundle that holds a secret is a secret Output (encrypted in the state).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_command.remote as remote

from halab import plan, render
from halab.model import Lab, Node

# cloud images boot in 20-60 s: keep dialling SSH for up to ~10 minutes before failing.
SSH_DIAL_ATTEMPTS = 60
SSH_DIAL_TIMEOUT_S = 10


def connection(lab: Lab, node: Node, private_key: pulumi.Input[str], agent_socket: str | None) -> remote.ConnectionArgs:
    """SSH to the node; through its libvirt host as a jump when that host's URI is qemu+ssh://."""
    proxy = None
    jump_host = lab.libvirt.hypervisor(node.hypervisor).jump_host
    if jump_host:
        user_host, _, port = jump_host.rpartition(":")
        user, _, host = user_host.rpartition("@")
        proxy = remote.ProxyConnectionArgs(
            host=host,
            port=int(port),
            user=user or None,
            # The jump host authenticates the user's own key, through their SSH agent.
            agent_socket_path=agent_socket,
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


def create_steps(
    parent: pulumi.Resource,
    name: str,
    lab: Lab,
    node: Node,
    conn: remote.ConnectionArgs,
    credentials: pulumi.Output[render.Credentials],
    first_after: Sequence[pulumi.Resource],
    guest_id: pulumi.Input[str],
    extra_after: dict[str, Sequence[pulumi.Resource]] | None = None,
) -> dict[str, remote.Command]:
    """One Command per step, each after the previous; `extra_after[step]` adds dependencies.

    Each step's triggers are its bundle's hash and the guest's identity (the domain's ID): a
    replaced guest (a new image, a new disk size, a domain deleted out of band and re-created
    by `pulumi up --refresh`) is a blank machine, and every step runs on it again."""
    public = plan.host_steps(lab, node, render.Credentials.placeholder())
    commands: dict[str, remote.Command] = {}
    previous: list[pulumi.Resource] = list(first_after)
    for i, step in enumerate(public):
        if step.secret:
            real = credentials.apply(lambda c, i=i: plan.host_steps(lab, node, c)[i])
            bundle: pulumi.Input[str] = pulumi.Output.secret(real.apply(lambda s: s.bundle()))
            digest: pulumi.Input[str] = pulumi.Output.secret(real.apply(lambda s: s.digest()))
        else:
            bundle, digest = step.bundle(), step.digest()
        after = previous + list((extra_after or {}).get(step.name, ()))
        cmd = remote.Command(
            f"{name}-{step.name}",
            connection=conn,
            create="sudo bash -s",
            stdin=bundle,
            triggers=[digest, guest_id],
            opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
        )
        commands[step.name] = cmd
        previous = [cmd]
    return commands
