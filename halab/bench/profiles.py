"""The configurations compared side by side, as overlays on the dev stack's config."""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    # The seed article's settings as written: VRRPv2 multicast, 1 s adverts, a process-name check
    # every second; only its outright bugs fixed (names, checks, persistence, priorities).
    "seed": {"halab:vrrp": {"mode": "multicast", "advertInterval": 1, "haproxyCheck": "process-name"}},
    # The project's defaults (Pulumi.dev.yaml).
    "default": {},
    # The fastest supported settings: VRRPv3 at 0.2 s, tight backend checks.
    "fast": {
        "halab:vrrp": {"version": 3, "advertInterval": 0.2},
        "halab:healthCheck": {"interval": "500ms", "rise": 2, "fall": 2},
    },
}
DESCRIPTIONS = {
    "seed": "VRRPv2 multicast, 1 s adverts, any process named haproxy (`pgrep`, as the article's `killall -0`) "
    "every 1 s",
    "default": "VRRPv2 unicast, 1 s adverts, this node's haproxy watched every 0.1 s",
    "fast": "VRRPv3 unicast, 0.2 s adverts, watched every 0.1 s, backends checked every 0.5 s",
}


def stack_config(base: dict[str, Any], profile: str) -> dict[str, Any]:
    """The dev stack's config with the profile's keys merged in, under its own lab name (so a
    benchmark never touches a lab the user has up)."""
    out = dict(base)
    for key, overlay in PROFILES[profile].items():
        out[key] = {**(base.get(key) or {}), **overlay} if isinstance(overlay, dict) else overlay
    out["halab:network"] = {**(base.get("halab:network") or {}), "name": f"bench-{profile}"}
    return out
