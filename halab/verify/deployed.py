"""A deployed stack as the verifier sees it: the model from the stack's own config, the nodes'
addresses and key from its outputs (both through the Pulumi CLI), SSH endpoints as the
program's remote commands reach them, and a client host that can get replies from the VIP.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

from halab.core import config, stackfile
from halab.core.model import Lab
from halab.verify.ssh import Endpoint, SshTransport
from halab.verify.transport import VerifyContext

CLIENT = "_client"  # the client host's name for the verifier, whichever machine it is


class StackError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Stack:
    lab: Lab
    outputs: dict[str, Any]
    secrets: dict[str, str]


def _pulumi(args: list[str], cwd: Path) -> Any:
    try:
        p = subprocess.run(["pulumi", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise StackError("the Pulumi CLI is not installed (https://www.pulumi.com/docs/install/)") from None
    if p.returncode != 0:
        raise StackError(f"`pulumi {' '.join(args)}` failed:\n{p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout or "{}")


def load(stack: str, cwd: Path) -> Stack:
    """The stack's validated model, its outputs and its secrets (decrypted by the CLI)."""
    entries = _pulumi(["config", "--json", "--show-secrets", "--stack", stack], cwd)
    raw, secrets = stackfile.from_pulumi((k, v.get("value"), bool(v.get("secret"))) for k, v in entries.items())
    try:
        lab = config.parse(raw, secrets=secrets)
    except config.ConfigError as e:
        raise StackError(f"stack {stack}: {e}") from None
    outputs = _pulumi(["stack", "output", "--json", "--show-secrets", "--stack", stack], cwd)
    if not outputs:
        raise StackError(f"stack {stack} has no outputs: deploy it first (pulumi up --stack {stack})")
    deployed = {**outputs.get("load_balancers", {}), **outputs.get("backends", {})}
    configured = {n.name: str(n.address) for n in lab.nodes}
    if deployed != configured or outputs.get("vip") != str(lab.vip):
        raise StackError(
            f"stack {stack}: its config differs from what is deployed (config {configured}, VIP {lab.vip}; "
            f"deployed {deployed}, VIP {outputs.get('vip')}): run `pulumi up --stack {stack}` first"
        )
    return Stack(lab, outputs, secrets)


def key_file(stack: Stack, given: str | None, into: Path) -> str:
    """The nodes' private key: yours (--ssh-key), or the one the program generated (an output)."""
    if given:
        return given
    generated = stack.outputs.get("ssh_private_key")
    if not generated:
        raise StackError("the stack uses your own key pair (halab:ssh.publicKey): pass its private key, --ssh-key FILE")
    path = into / "id_stack"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generated if generated.endswith("\n") else generated + "\n")
    return str(path)


def endpoints(lab: Lab, identity: str, jump_identity: str | None) -> dict[str, Endpoint]:
    """Every node as the program reaches it, and the client host: this machine, unless the
    nodes are behind a jump host (a remote libvirt host), which then sends the requests."""
    out: dict[str, Endpoint] = {}
    for node in lab.nodes:
        hop = lab.libvirt.hypervisor(node.hypervisor).jump_host
        jump = Endpoint.parse(hop, jump_identity) if hop else None
        out[node.name] = Endpoint(str(node.address), lab.ssh.user, 22, identity, jump, sudo=True)
    out[CLIENT] = out[lab.load_balancers[0].name].jump or Endpoint(None)
    return out


def client_sources(lab: Lab, owned: list[IPv4Address]) -> tuple[list[str], str | None, str | None]:
    """(the client host's addresses that get replies from the VIP, one outside the lab subnet,
    one on it). Off the subnet, replies reach an address through the lab's gateway only, so
    those count when the client host is the gateway (the libvirt host of a nat/route network).
    On the subnet, a backend sends replies through the VIP only to its testClients."""
    cidr = lab.network.cidr
    outside = [str(a) for a in owned if a not in cidr] if lab.network.gateway in owned else []
    on_subnet = [str(a) for a in owned if a in lab.test_clients]
    return outside + on_subnet, (outside or [None])[0], (on_subnet or [None])[0]


def host_addresses(transport: SshTransport, host: str) -> list[IPv4Address]:
    out = transport.run(host, ["ip", "-4", "-o", "addr", "show", "scope", "global"]).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(ip_address(words[words.index("inet") + 1].split("/")[0]))
    return [a for a in found if isinstance(a, IPv4Address)]


def context(
    stack: Stack,
    transport: SshTransport,
    sources: list[str] | None = None,
    read_only: bool = False,
) -> VerifyContext:
    lab = stack.lab
    owned = host_addresses(transport, CLIENT)
    where = transport.endpoints[CLIENT].address or "this machine"
    for a in sources or []:
        try:
            ok = ip_address(a) in owned
        except ValueError:
            raise StackError(f"--client-source {a!r}: not an IPv4 address") from None
        if not ok:
            raise StackError(f"--client-source {a}: not an address of {where} ({', '.join(map(str, owned))})")
    detected, outside, lan = client_sources(lab, owned)
    chosen = sources or detected
    if not chosen:
        raise StackError(
            f"no address of {where} gets replies from the VIP: run the verifier on the libvirt host "
            f"(the lab's gateway {lab.network.gateway}), or from an address listed in halab:testClients, "
            "or name such addresses with --client-source"
        )
    if sources:  # given: each is outside the subnet, or on it (and then a test client)
        outside = next((a for a in sources if ip_address(a) not in lab.network.cidr), None)
        lan = next((a for a in sources if ip_address(a) in lab.network.cidr), None)
    return VerifyContext(
        lab=lab,
        client=CLIENT,
        client_sources=tuple(chosen),
        outside_source=outside,
        lan_client=CLIENT if lan else None,
        lan_source=lan,
        rogue=lab.backends[-1].name,
        stats_password=stack.secrets.get("statsPassword", ""),
        read_only=read_only,
    )
