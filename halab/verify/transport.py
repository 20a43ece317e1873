"""How the verifier reaches the lab's hosts. One verifier, several transports: the namespace
lab here; SSH to the libvirt VMs implements the same two calls."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

from halab.model import Lab


class Transport(Protocol):
    python: str  # a Python 3 interpreter on the client hosts

    def run(
        self, host: str, cmd: list[str] | str, *, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]: ...

    def spawn(self, host: str, cmd: list[str]) -> subprocess.Popen[str]: ...


@dataclass(frozen=True)
class Site:
    """Where the verifier sends requests from, besides the lab model itself."""

    lab: Lab
    client: str  # host playing a client beyond the router (the outside world)
    client_sources: tuple[str, ...]  # its addresses: the first for drills, all for spreading
    lan_client: str  # host on the lab subnet itself (a test client with a return route)
    lan_source: str
    stats_password: str = ""  # to read the HAProxy stats pages


class NetnsTransport:
    def __init__(self, nodes: dict, python: str):
        self.nodes = nodes
        self.python = python

    def run(self, host, cmd, *, input=None, check=True, timeout=60.0):
        return self.nodes[host].run(cmd, input=input, check=check, timeout=timeout)

    def spawn(self, host, cmd):
        return subprocess.Popen(
            self.nodes[host].argv(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
