"""The `halab:services` list and the `halab:service` defaults: each service's port, balance,
persistence, transparency, and the check that proves a server serves it."""

from __future__ import annotations

import re
from typing import Any

from halab.core.config_rules import DURATION_RE, Problems, boolean, integer, keys, string
from halab.core.model import Service, ServiceCheck

BALANCE_ALGORITHMS = ("roundrobin", "static-rr", "leastconn", "first", "source")
TRANSPARENCY = ("tproxy", "proxy-protocol", "forwarded-for")


def parse_services(p: Problems, obj: Any, defaults: Any, backends: tuple[str, ...]) -> tuple[Service, ...]:
    """The services; `backends`: the names of the stack's backends, which pools may name."""
    d = keys(p, "service", defaults, {"balance", "sticky", "stickyExpire"})
    if not isinstance(obj, list) or not obj:
        p.add("services", obj, "must be a non-empty list")
        return ()
    out, names, ports = [], set(), set()
    for i, item in enumerate(obj):
        k = f"services[{i}]"
        o = keys(
            p,
            k,
            item,
            {
                "name",
                "port",
                "backendPort",
                "balance",
                "sticky",
                "stickyExpire",
                "backendTls",
                "protocol",
                "transparency",
                "check",
                "backends",
            },
        )
        name = string(p, f"{k}.name", o.get("name"), re.compile(r"^[a-z][a-z0-9_-]{0,30}$"), "service name")
        if name in names:
            p.add(f"{k}.name", name, "is already used by another service")
        names.add(name)
        port = integer(p, f"{k}.port", o.get("port"), 1, 65535)
        if port is not None and port in ports:
            p.add(f"{k}.port", port, "is already used by another service")
        ports.add(port)
        bport = integer(p, f"{k}.backendPort", o.get("backendPort", port or 1), 1, 65535)
        balance = o.get("balance", d.get("balance"))
        if balance not in BALANCE_ALGORITHMS:
            p.add(f"{k}.balance", balance, f"must be one of {', '.join(BALANCE_ALGORITHMS)}")
        sticky = boolean(p, f"{k}.sticky", o.get("sticky", d.get("sticky")))
        expire = string(p, f"{k}.stickyExpire", o.get("stickyExpire", d.get("stickyExpire")), DURATION_RE, "duration")
        protocol = o.get("protocol", "http")
        if protocol not in ("http", "tcp"):
            p.add(f"{k}.protocol", protocol, "must be http (Apache on the backends) or tcp (a TCP banner)")
        tls = boolean(p, f"{k}.backendTls", o.get("backendTls", port == 443 and protocol == "http"))
        if tls and protocol == "tcp":
            p.add(f"{k}.backendTls", tls, "needs protocol: http (the TCP banner speaks no TLS)")
        transparency = o.get("transparency", "tproxy")
        if transparency not in TRANSPARENCY:
            p.add(f"{k}.transparency", transparency, f"must be one of {', '.join(TRANSPARENCY)}")
        elif transparency == "forwarded-for" and (protocol != "http" or tls):
            p.add(f"{k}.transparency", transparency, "needs protocol: http without backendTls (HAProxy adds a header)")
        check = _service_check(p, f"{k}.check", o.get("check"), protocol)
        pool = _pool(p, f"{k}.backends", o["backends"], backends) if "backends" in o else ()
        if port is not None and bport is not None:
            svc = Service(name, port, bport, str(balance), sticky, expire, tls, protocol, transparency, check, pool)
            for other in out:  # one listener per backend port: services that share it must agree
                if other.backend_port == bport and (other.protocol, other.backend_tls, other.transparency) != (
                    protocol,
                    tls,
                    transparency,
                ):
                    p.add(f"{k}.backendPort", bport, f"is shared with service {other.name}, served differently")
            out.append(svc)
    return tuple(out)


CHECK_KINDS = {"http": ("http", "connect"), "tcp": ("banner", "smtp", "connect")}
CHECK_PATH_RE = re.compile(r"^/[\x21-\x7e]{0,200}$")  # printable, no space: one token in haproxy.cfg
CHECK_EXPECT_RE = re.compile(r"^[\x20-\x7e]{1,64}$")


def _service_check(p: Problems, key: str, obj: Any, protocol: str) -> ServiceCheck:
    """services[].check: how haproxy checks this service's backends. Absent: the protocol's
    default, which works on the lab's backends."""
    default = ServiceCheck.default(protocol)
    if obj is None:
        return default
    o = keys(p, key, obj, {"type", "path", "status", "expect"})
    kinds = CHECK_KINDS.get(protocol, ())
    kind = o.get("type", default.kind)
    if kind not in kinds:
        p.add(f"{key}.type", kind, f"must be one of {', '.join(kinds)} for a {protocol} service")
        return default
    allowed = {"http": {"type", "path", "status"}, "banner": {"type", "expect"}}.get(kind, {"type"})
    for extra in sorted((set(o) - allowed) & {"path", "status", "expect"}):  # unknown keys: keys() said so
        p.add(f"{key}.{extra}", o[extra], f"does not apply to a {kind} check")
    path = string(p, f"{key}.path", o.get("path", default.path), CHECK_PATH_RE, "path (/..., no spaces)")
    status = integer(p, f"{key}.status", o.get("status", default.status), 100, 599) or default.status
    expect = o.get("expect", default.expect)
    if not isinstance(expect, str) or not CHECK_EXPECT_RE.match(expect) or '"' in expect or "\\" in expect:
        p.add(f"{key}.expect", expect, "must be 1-64 printable characters, without quotes or backslashes")
        expect = default.expect
    return ServiceCheck(kind, path, status, expect)


def _pool(p: Problems, key: str, obj: Any, backends: tuple[str, ...]) -> tuple[str, ...]:
    """A service's backends by name: a non-empty list of the stack's backends, each once."""
    if not isinstance(obj, list) or not obj:
        p.add(key, obj, f"must be a non-empty list of backend names ({', '.join(backends)})")
        return ()
    seen: list[str] = []
    for i, name in enumerate(obj):
        if name in seen:
            p.add(f"{key}[{i}]", name, "is listed twice")
        elif name not in backends:
            p.add(f"{key}[{i}]", name, f"is not a backend of this stack (backends: {', '.join(backends)})")
        else:
            seen.append(name)
    return tuple(seen)
