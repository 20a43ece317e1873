"""Rows about the services as clients see them: every service answers and its backend sees
the client's own address (transparency), connections spread, clients stick, stats pages."""

from __future__ import annotations

from collections import Counter

from halab.model import Service
from halab.verify.probes import (
    drill,
    sample,
)
from halab.verify.rows import Row, skip
from halab.verify.transport import Site, Transport


def check_services(t: Transport, site: Site) -> list[Row]:
    """One request per service from each client; the backend must report the client's address."""
    rows = []
    for label, host, source in (
        ("outside client", site.client, site.outside_source),
        ("on-subnet client", site.lan_client, site.lan_source),
    ):
        if host is None or source is None:
            rows.append(skip(f"every service from the {label}: backend sees it", f"no {label} address to send from"))
            continue
        for svc in site.lab.services:
            (s,) = sample(t, host, site.lab.url(svc), [source], "--count", "1", "--timeout", "3").finish()
            ok = s.ok and s.seen == source
            fig = f"{s.backend} saw {s.seen}" if s.ok else "request failed"
            rows.append(Row(f"{svc.name} (:{svc.port}) from the {label} {source}: backend sees it", ok, fig))
    return rows


# Algorithms that share held connections evenly among equal servers: the counts differ by at
# most one. `first` fills the first server (the lowest id, listed first) up to its maxconn (none
# here: all of them); `source` hashes the client address, so each one has its server.
EVEN_BALANCE = ("roundrobin", "static-rr", "leastconn")


def check_spread(t: Transport, site: Site) -> list[Row]:
    """Concurrent clients, one connection each held open: what the service's balance algorithm
    promises. The counts are from one burst on tables emptied first (sticky services)."""
    lab = site.lab
    backends = [b.name for b in lab.backends]
    sources = list(site.client_sources)
    rows = []
    for svc in lab.services:
        name = {
            "first": f"{svc.name}: concurrent clients all go to the first backend, {backends[0]} (first)",
            "source": f"{svc.name}: each client address hashes to one backend, burst after burst (source)",
        }.get(svc.balance, f"{svc.name}: concurrent clients spread over every backend, within one ({svc.balance})")
        if len(sources) < len(backends):
            rows.append(skip(name, f"{len(sources)} client address(es) for {len(backends)} backends"))
            continue
        if svc.sticky:  # from empty tables: a previous run's entries would decide instead
            if site.read_only:
                rows.append(skip(name, "read-only: the stick table decides, and clearing it moves clients"))
                continue
            for lb in lab.load_balancers:
                drill(t, lb.name, "haproxy-api", "clear", "table", f"bk_{svc.name}")
        held = _held_burst(t, site, svc, sources)
        got = Counter(held.values())
        counts = ", ".join(f"{b} {got.get(b, 0)}" for b in backends)
        every = None not in held.values()
        if svc.balance == "first":
            ok, fig = (
                every and got == Counter({backends[0]: len(sources)}),
                f"{len(sources)} held connections: {counts}",
            )
        elif svc.balance == "source":
            again = _held_burst(t, site, svc, sources)
            same = sum(held[s] is not None and held[s] == again[s] for s in sources)
            ok = same == len(sources) and len(got) > 1
            fig = f"{same}/{len(sources)} addresses reached the same backend in a second burst; first burst: {counts}"
        else:
            ok = every and set(got) == set(backends) and max(got.values()) - min(got.values()) <= 1
            fig = f"{len(sources)} client addresses: {counts}"
        rows.append(Row(name, ok, fig))
    return rows


def _held_burst(t: Transport, site: Site, svc: Service, sources: list[str]) -> dict[str, str | None]:
    """One connection from each source, all held open at once: source -> backend (None: failed)."""
    held = sample(t, site.client, site.lab.url(svc), sources, "--hold", "--timeout", "3").finish()
    out: dict[str, str | None] = dict.fromkeys(sources)
    out.update({s.source: s.backend if s.ok else None for s in held})
    return out


def check_stickiness(t: Transport, site: Site) -> list[Row]:
    """Each client address reaches the same backend, request after request (changes nothing)."""
    rows = []
    sources = list(site.client_sources)
    for svc in site.lab.services:
        if not svc.sticky:
            continue
        got = sample(
            t, site.client, site.lab.url(svc), sources * 4, "--count", str(4 * len(sources)), "--interval", "0"
        ).finish()
        first = {s.source: s.backend for s in got[: len(sources)]}
        kept = sum(bool(first[src]) and all(s.backend == first[src] for s in got if s.source == src) for src in sources)
        rows.append(
            Row(
                f"{svc.name}: each client address sticks to its backend",
                kept == len(sources),
                f"{kept}/{len(sources)} addresses kept their backend over 3 more requests each",
            )
        )
    return rows


def check_stats_pages(t: Transport, site: Site) -> list[Row]:
    lab = site.lab
    port = lab.haproxy.stats_port
    if not port:
        return [skip("stats pages", "disabled (halab:haproxy.statsPort: 0)")]
    results = []
    asker = site.lan_client or site.client
    for lb in lab.load_balancers:
        u = f"http://{lb.address}:{port}/;csv"
        anon = t.run(asker, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", u], check=False)
        auth = t.run(
            asker,
            ["curl", "-s", "-m", "5", "-K", "-", u],
            input=f'user = "{lab.haproxy.stats_user}:{site.stats_password}"\n',
            check=False,
        )
        ok = anon.stdout == "401" and f"bk_{lab.services[0].name}," in auth.stdout
        results.append((lb.name, ok, anon.stdout, "stats" if f"bk_{lab.services[0].name}," in auth.stdout else "none"))
    fig = ", ".join(f"{n}: {code} without the password, {got} with it" for n, _, code, got in results)
    return [Row("stats page on every load balancer, behind its password", all(r[1] for r in results), fig)]
