"""ha-lb-lab: highly available load balancers (keepalived + HAProxy TPROXY) on libvirt.

Reads the stack config once, validates it (every problem listed, nothing created on error),
and wires the Lab component. Everything else lives in components/ and halab/.
"""

import gc

import pulumi

from components import remote_steps, stack_config
from components.lab import LabComponent, LabComponentArgs
from halab.core.config import ConfigError

# The program builds one resource graph, which lives until the program exits: the cyclic
# collector frees almost nothing of it, and only rescans it, more often the bigger it grows.
# For 100 backends under mocks the program takes 1.40 s without it and 2.44 s with it, and
# holds 100 MiB against 94 (docs/benchmarks.md). It runs once and exits: no collector at all.
gc.disable()

try:
    cfg = stack_config.load()
except ConfigError as e:
    # Nothing has been created yet: fail with the list of problems, without a traceback.
    raise pulumi.RunError(str(e)) from None
if (agent := remote_steps.ssh_agent_problem()) is not None:
    raise pulumi.RunError(agent)

lab = LabComponent(
    "halab",
    LabComponentArgs(
        lab=cfg.lab,
        credentials=cfg.credentials,
        library_files=remote_steps.LibraryFiles.for_stack(pulumi.get_project(), pulumi.get_stack()),
        ssh_private_key=cfg.ssh_private_key,
    ),
)

pulumi.export("vip", lab.vip)
pulumi.export("load_balancers", lab.lb_addresses)
pulumi.export("backends", lab.backend_addresses)
pulumi.export("urls", lab.urls)
# user: halab:haproxy.statsUser (admin); password: pulumi config get halab:statsPassword
pulumi.export("stats", lab.stats_urls)
pulumi.export("metrics", lab.metrics_urls)
pulumi.export("ssh", lab.ssh_hints)
if lab.generated_ssh_key is not None:
    # pulumi stack output --show-secrets ssh_private_key > halab-key && chmod 600 halab-key
    pulumi.export("ssh_private_key", lab.generated_ssh_key)
