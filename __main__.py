"""ha-lb-lab: highly available load balancers (keepalived + HAProxy TPROXY) on libvirt.

Reads the stack config once, validates it (every problem listed, nothing created on error),
and wires the Lab component. Everything else lives in components/ and halab/.
"""

import gc
import os

import pulumi

from components import stack_config
from components.lab import Lab, LabArgs
from halab.config import ConfigError

# The program builds one resource graph, which lives until the program exits. CPython's full
# collections rescan that growing graph: for 100 backends, 7 of them took 1.3 of 3.2 s under
# mocks, and made the cost grow faster than the graph (docs/benchmarks.md). Young collections
# still free short-lived cycles; a full one comes only after 1,000 of them.
gc.set_threshold(700, 10, 1_000)

try:
    cfg = stack_config.load()
except ConfigError as e:
    # Nothing has been created yet: fail with the list of problems, without a traceback.
    raise pulumi.RunError(str(e)) from None

lab = Lab(
    "halab",
    LabArgs(
        lab=cfg.lab,
        credentials=cfg.credentials,
        ssh_private_key=cfg.ssh_private_key,
        ssh_agent_socket=os.environ.get("SSH_AUTH_SOCK"),
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
