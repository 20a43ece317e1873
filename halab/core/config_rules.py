"""The rules every stack-config key is checked by, shared by every section of the config
(halab/core/config.py, halab/core/config_services.py): each bad value becomes one problem naming the key
and the value, and all of them are collected before anything fails, so a user fixes a stack
file in one pass."""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address, ip_address
from typing import Any

from halab.core.model import Network

NS = "halab"
SECRET_KEYS = ("vrrpAuthPass", "sshPrivateKey", "statsPassword", "bgpPassword")

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
IFACE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")
DURATION_RE = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d)?$")


class ConfigError(ValueError):
    """Every problem found in a stack config, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  - {p}" for p in problems))


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, value: Any, why: str) -> None:
        self.items.append(f"{NS}:{key}: {value!r} {why}")


def keys(p: Problems, key: str, obj: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        p.add(key, obj, "must be a mapping")
        return {}
    for k in obj:
        if k not in allowed:
            p.add(f"{key}.{k}", obj[k], f"is not a known key (known: {', '.join(sorted(allowed))})")
    return obj


def integer(p: Problems, key: str, value: Any, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        p.add(key, value, "must be an integer")
        return None
    if not lo <= value <= hi:
        p.add(key, value, f"is out of range {lo}-{hi}")
        return None
    return value


def boolean(p: Problems, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        p.add(key, value, "must be true or false")
        return False
    return value


def string(p: Problems, key: str, value: Any, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str) or not value:
        p.add(key, value, "must be a non-empty string")
        return ""
    if pattern is not None and not pattern.match(value):
        p.add(key, value, f"is not a valid {what}")
    return value


def address(p: Problems, key: str, value: Any) -> IPv4Address | None:
    try:
        a = ip_address(str(value)) if isinstance(value, str) else None
    except ValueError:
        a = None
    if not isinstance(a, IPv4Address):
        p.add(key, value, "is not an IPv4 address")
        return None
    return a


def in_subnet(p: Problems, key: str, a: IPv4Address | None, net: Network | None, taken: dict) -> None:
    """Checks an address can be a host on the lab network and is not already used."""
    if a is None or net is None:
        return
    if a not in net.cidr:
        p.add(key, str(a), f"is outside {NS}:network.cidr {net.cidr}")
    elif a == net.cidr.network_address:
        p.add(key, str(a), "is the network address of the lab subnet")
    elif a == net.cidr.broadcast_address:
        p.add(key, str(a), "is the broadcast address of the lab subnet")
    elif a == net.gateway:
        p.add(key, str(a), "is the gateway (the hypervisor's address on the lab network)")
    if a in taken:
        p.add(key, str(a), f"is already used by {taken[a]}")
    else:
        taken[a] = f"{NS}:{key}"


def merge(defaults: Any, given: Any) -> Any:
    if isinstance(defaults, dict) and isinstance(given, Mapping):
        return {**defaults, **given}
    return given
