"""Rows about the services as clients see them: every service answers and its backend sees
the client's own address (transparency), connections spread, clients stick, stats pages."""

from __future__ import annotations

from collections import Counter

from halab.core.model import Service
from halab.verify import drills
from halab.verify.probes import (
    sample,
)
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext


def check_services(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """One request per service from each client; the backend must report the client's address."""
    rows = []
    for label, host, source in (
        ("outside client", ctx.client, ctx.outside_source),
        ("on-subnet client", ctx.lan_client, ctx.lan_source),
    ):
        if host is None or source is None:
            rows.append(skip(f"every service from the {label}: backend sees it", f"no {label} address to send from"))
            continue
        for svc in ctx.lab.services:
            (s,) = sample(transport, host, ctx.lab.url(svc), [source], "--count", "1", "--timeout", "3").finish()
            pool = [b.name for b in ctx.lab.pool(svc)]
            ok = s.ok and s.seen == source and s.backend in pool
            fig = "request failed" if not s.ok else f"{s.backend} saw {s.seen}"
            if s.ok and s.backend not in pool:
                fig += f", outside the pool ({', '.join(pool)})"
            rows.append(Row(f"{svc.name} (:{svc.port}) from the {label} {source}: backend sees it", ok, fig))
    return rows


# Algorithms that share held connections evenly among equal servers: the counts differ by at
# most one. `first` fills the first server (the lowest id, listed first) up to its maxconn (none
# here: all of them); `source` hashes the client address, so each one has its server.
EVEN_BALANCE = ("roundrobin", "static-rr", "leastconn")


def check_spread(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """Concurrent clients, one connection each held open: what the service's balance algorithm
    promises. The counts are from one burst on tables emptied first (sticky services)."""
    lab = ctx.lab
    sources = list(ctx.client_sources)
    rows = []
    for svc in lab.services:
        backends = [b.name for b in lab.pool(svc)]  # its pool: the only servers it may reach
        name = {
            "first": f"{svc.name}: concurrent clients all go to the first backend, {backends[0]} (first)",
            "source": f"{svc.name}: each client address hashes to one backend, burst after burst (source)",
        }.get(svc.balance, f"{svc.name}: concurrent clients spread over its backends, within one ({svc.balance})")
        if len(sources) < len(backends):
            rows.append(skip(name, f"{len(sources)} client address(es) for {len(backends)} backends"))
            continue
        if svc.sticky:  # from empty tables: a previous run's entries would decide instead
            if ctx.read_only:
                rows.append(skip(name, "read-only: the stick table decides, and clearing it moves clients"))
                continue
            for lb in lab.load_balancers:
                drills.action(transport, lb.name, "haproxy-api", "clear", "table", svc.haproxy_backend)
        held = _held_burst(transport, ctx, svc, sources)
        got = Counter(held.values())
        counts = ", ".join(f"{b} {got.get(b, 0)}" for b in backends)
        every = None not in held.values()
        if svc.balance == "first":
            ok, fig = (
                every and got == Counter({backends[0]: len(sources)}),
                f"{len(sources)} held connections: {counts}",
            )
        elif svc.balance == "source":
            again = _held_burst(transport, ctx, svc, sources)
            same = sum(held[s] is not None and held[s] == again[s] for s in sources)
            ok = same == len(sources) and len(got) > 1 and set(got) <= set(backends)
            fig = f"{same}/{len(sources)} addresses reached the same backend in a second burst; first burst: {counts}"
        else:
            ok = every and set(got) == set(backends) and max(got.values()) - min(got.values()) <= 1
            fig = f"{len(sources)} client addresses: {counts}"
        rows.append(Row(name, ok, fig))
    return rows


PROBE_PORTS = """
import socket, sys
port = int(sys.argv[1])
for addr in sys.argv[2:]:
    try:
        socket.create_connection((addr, port), timeout=2).close()
        print(addr, "open")
    except ConnectionRefusedError:
        print(addr, "refused")
    except OSError as e:
        print(addr, type(e).__name__)
"""


def check_pools(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """A service with a pool: every backend outside it refuses the service's backend port, asked
    directly from a load balancer (on the subnet, past haproxy): nothing there serves it."""
    lab, rows = ctx.lab, []
    asker = lab.load_balancers[0].name
    for svc in lab.services:
        outside = [b for b in lab.backends if b not in lab.pool(svc)]
        if not outside:
            continue
        args = [str(svc.backend_port), *(str(b.address) for b in outside)]
        out = transport.run(asker, [transport.python, "-", *args], input=PROBE_PORTS).stdout
        answers = dict(line.split() for line in out.splitlines())
        got = {b.name: answers.get(str(b.address), "no answer") for b in outside}
        rows.append(
            Row(
                f"{svc.name}: backends outside its pool refuse :{svc.backend_port}",
                all(v == "refused" for v in got.values()),
                ", ".join(f"{n} {v}" for n, v in got.items()) + f" (pool: {', '.join(b.name for b in lab.pool(svc))})",
            )
        )
    return rows


def _held_burst(transport: Transport, ctx: VerifyContext, svc: Service, sources: list[str]) -> dict[str, str | None]:
    """One connection from each source, all held open at once: source -> backend (None: failed)."""
    held = sample(transport, ctx.client, ctx.lab.url(svc), sources, "--hold", "--timeout", "3").finish()
    out: dict[str, str | None] = dict.fromkeys(sources)
    out.update({s.source: s.backend if s.ok else None for s in held})
    return out


def check_stickiness(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """Each client address reaches the same backend of the pool, request after request (changes
    nothing)."""
    rows = []
    sources = list(ctx.client_sources)
    for svc in ctx.lab.services:
        if not svc.sticky:
            continue
        got = sample(
            transport, ctx.client, ctx.lab.url(svc), sources * 4, "--count", str(4 * len(sources)), "--interval", "0"
        ).finish()
        first = {s.source: s.backend for s in got[: len(sources)]}
        pool = {b.name for b in ctx.lab.pool(svc)}
        kept = sum(
            first[src] in pool and all(s.backend == first[src] for s in got if s.source == src) for src in sources
        )
        rows.append(
            Row(
                f"{svc.name}: each client address sticks to its backend",
                kept == len(sources),
                f"{kept}/{len(sources)} addresses kept their backend over 3 more requests each",
            )
        )
    return rows
