"""How the verifier reaches the lab's hosts. One verifier, two transports: the namespace lab's
(here) and SSH to the deployed VMs (ssh.py), each implementing the same two calls. `run` raises
subprocess.TimeoutExpired when a host does not answer in time."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

from halab.core.model import Lab


class Transport(Protocol):
    python: str  # a Python 3 interpreter on the hosts (the sampler's client, the rogue backend)

    def run(
        self, host: str, cmd: list[str] | str, *, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]: ...

    def spawn(self, host: str, cmd: list[str]) -> subprocess.Popen[str]: ...


@dataclass(frozen=True)
class VerifyContext:
    """Where the verifier sends requests from, besides the lab model itself, and how far it may go."""

    lab: Lab
    client: str  # host that sends the drills' and the spreading requests
    client_sources: tuple[str, ...]  # its addresses that get replies: the first for drills, all for spreading
    outside_source: str | None  # one of them beyond the lab subnet (the outside world), if any
    lan_client: str | None  # a host on the lab subnet with a return route via the VIP (testClients), if any
    lan_source: str | None
    rogue: str  # an on-subnet lab host that is not a VRRP peer: it plays the rogue VRRP speaker
    stats_password: str = ""  # to read the HAProxy stats pages
    read_only: bool = False  # only the checks that change nothing: no fault, reload or table clear
    # How hard the drills' samplers press, and how long a request may take: a request every
    # 20 ms within 0.3 s on real machines; an emulated guest (the VM lab under TCG) serves a
    # few dozen a second at most, and load alone would then fail the rows it measures.
    request_interval: float = 0.02
    request_timeout: float = 0.3
    # How often the drills ask every load balancer whether it holds the VIP (a command each, over
    # SSH on VMs): split brain needs two samples in a row to count.
    holder_interval: float = 0.05
    # Whether the rows hold failover times to ceilings derived from the stack's timers. False on
    # emulated guests (10 to 50 times slower): there the figures prove the mechanism, not its speed.
    timed: bool = True
    # How long a drill waits for the VIP to move and requests to recover, each way. Longer on
    # emulated guests: a restore starts haproxy or keepalived over SSH and the check script must
    # pass twice on a vCPU a booting neighbour can starve (a VM lab restore once took 32.8 s).
    drill_bound: float = 20.0
    # ecmp mode: the host where the lab's router runs FRR (its sessions, its paths to the VIP)
    router: str | None = None


class NetnsTransport:
    def __init__(self, nodes: dict, python: str):
        self.nodes = nodes
        self.python = python

    def run(self, host, cmd, *, input=None, check=True, timeout=60.0):
        return self.nodes[host].run(cmd, input=input, check=check, timeout=timeout)

    def spawn(self, host, cmd):
        # a session of its own: stopping it signals nsenter's child too (nsenter dies of SIGTERM
        # alone and leaves its child running, the pipe open)
        return subprocess.Popen(
            self.nodes[host].argv(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
