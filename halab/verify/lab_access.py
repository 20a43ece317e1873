"""Where the verifier meets each lab: how it reaches the namespace lab's hosts (`netns_context`)
and the VM lab's guests (`VmSession`), and `vm-lab verify`. The labs themselves (halab/drivers/)
know nothing of the verifier; their command-line tools bring the two together."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from halab.drivers.netns import lab as netns
from halab.drivers.netns.node import python_path
from halab.drivers.netns.topology import Topology
from halab.verify import checks, deployed
from halab.verify.ssh import SshTransport
from halab.verify.transport import NetnsTransport, VerifyContext

EMULATED_INTERVAL = 0.1  # the drills' request interval on TCG guests (0.02 s on real machines)
EMULATED_DRILL_BOUND = 60.0  # a drill's wait each way on TCG guests (20 s on real machines)


def netns_context(topo: Topology, read_only: bool = False) -> tuple[NetnsTransport, VerifyContext]:
    """What the verifier needs to know of this lab, and how it reaches its hosts."""
    lan = topo.lan_client
    sources = tuple(str(a) for a in topo.client_addresses)
    s = VerifyContext(
        lab=topo.lab,
        client="_client",
        client_sources=sources,
        outside_source=sources[0],
        lan_client=lan.name,
        lan_source=str(lan.address),
        rogue=topo.lab.backends[-1].name,
        stats_password=netns.credentials(topo).stats_password,
        read_only=read_only,
        router="_router" if topo.lab.mode == "ecmp" else None,
    )
    return NetnsTransport(netns.nodes(topo), python_path()), s


class VmSession:
    """The verifier's SSH transport to the guests, from the hypervisor's namespace, and its VerifyContext."""

    def __init__(self, config_file: str, read_only: bool = False):
        # here, not at the top: the namespace lab runs on a fresh host without .venv, and the
        # VM lab's driver imports Pulumi (it runs the program in process)
        from halab.drivers.vmlab import lab as vmlab

        self.hv, self.state, self.model, outputs = vmlab.loaded(config_file)
        self.stack = deployed.Stack(self.model, outputs, self.state.extra["secrets"])
        self.keys = tempfile.TemporaryDirectory(prefix="halab-key-")
        key = deployed.key_file(self.stack, None, Path(self.keys.name))
        self.transport = SshTransport(deployed.endpoints(self.model, key, None), netns=self.hv.netns)
        self.read_only = read_only

    def __enter__(self) -> VmSession:
        self.transport.connect()
        self.ctx = deployed.context(self.stack, self.transport, None, self.read_only)
        if self.model.libvirt.domain_type == "qemu":
            # emulated guests (TCG) serve a few dozen requests a second: drills press less
            # (and every probe over SSH costs a guest a fork of sshd, sudo and ip: sampled 2/s)
            self.ctx = dataclasses.replace(
                self.ctx,
                request_interval=EMULATED_INTERVAL,
                request_timeout=1.0,
                holder_interval=0.5,
                timed=False,
                drill_bound=EMULATED_DRILL_BOUND,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.transport.close()
        self.keys.cleanup()


def vm_verify(config_file: str, read_only: bool = False) -> int:
    with VmSession(config_file, read_only) as s:
        print(f"requests from {', '.join(s.ctx.client_sources)} on the hypervisor", flush=True)
        return checks.run_and_report(s.transport, s.ctx)
