"""The configurations compared side by side: overlays on the stack the benchmark varies (the dev
stack), or, for `fast`, the ready stack file users take as is (examples/Pulumi.fast.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from halab.core import stackfile
from halab.core.model import PacketPath

FAST_STACK = Path(__file__).resolve().parents[2] / "examples" / "Pulumi.fast.yaml"

# An overlay (keys merged into the base stack's) or a stack file of its own (used whole).
PROFILES: dict[str, dict[str, Any] | Path] = {
    # The seed article's settings as written: VRRPv2 multicast, 1 s adverts, a process-name check
    # every second; only its outright bugs fixed (names, checks, persistence, priorities).
    "seed": {"halab:vrrp": {"mode": "multicast", "advertInterval": 1, "haproxyCheck": "process-name"}},
    # The project's defaults (Pulumi.dev.yaml).
    "default": {},
    # Sub-second VRRPv3 that met the failover targets without a flap here (the soak).
    "fast": FAST_STACK,
    # The control: `fast` with the second chance switched off after `up` (WITHOUT_SECOND_CHANCE),
    # so what the planned hand-off's forwarding costs an unplanned failover is read in one run.
    "fast-nosc": FAST_STACK,
}
WITHOUT_SECOND_CHANCE = ("fast-nosc",)
DESCRIPTIONS = {
    "seed": "VRRPv2 multicast, 1 s adverts, any process named haproxy (`pgrep`, as the article's `killall -0`) "
    "every 1 s",
    "default": "VRRPv2 unicast, 1 s adverts, this node's haproxy watched every 0.1 s",
    "fast": "`examples/Pulumi.fast.yaml`: VRRPv3 unicast, 0.05 s adverts, priorities 254 and 253 (skew time "
    "0.01 adverts), haproxy's exit seen as it happens and its answers watched every 0.025 s, backends checked "
    "every 0.5 s",
    "fast-nosc": "`fast` without the second chance (halab-second-chance stopped and table "
    f"{PacketPath().second_chance_table} emptied on each "
    "load balancer after `up`): a packet that finds no socket on the new master meets a reset there, as "
    "before the planned hand-off (docs/handoff.md)",
}


def stack_config(base: dict[str, Any], profile: str, name: str | None = None) -> dict[str, Any]:
    """The profile's stack config under a lab name of its own (`bench-<profile>` unless `name`
    says), so a benchmark never touches a lab the user has up."""
    spec = PROFILES[profile]
    if isinstance(spec, Path):
        out = stackfile.load_stack_file(str(spec))
    else:
        out = dict(base)
        for key, overlay in spec.items():
            out[key] = {**(base.get(key) or {}), **overlay} if isinstance(overlay, dict) else overlay
    out["halab:network"] = {**(out.get("halab:network") or {}), "name": name or f"bench-{profile}"}
    return out
