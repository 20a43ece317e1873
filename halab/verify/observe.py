"""Rows about what an operator watches on each load balancer: the stats page and the Prometheus
metrics, both behind the stats password, and the VRRP state exported for Prometheus."""

from __future__ import annotations

import re

from halab.node.paths import PATHS
from halab.verify.probes import holders
from halab.verify.rows import Row, skip
from halab.verify.transport import Transport, VerifyContext

# Where keepalived's notify hook writes this node's VRRP state for node-exporter's textfile
# collector (halab/node/files/halab-notify; Debian's default textfile directory).
VRRP_TEXTFILE = PATHS["VRRP_TEXTFILE"]


def _get(transport: Transport, ctx: VerifyContext, url: str, password: str | None) -> tuple[str, str]:
    """(HTTP status, body) of a GET from the on-subnet client, with the stats user or without."""
    asker = ctx.lan_client or ctx.client
    cmd = ["curl", "-s", "-m", "5", "-w", "\n%{http_code}", "-K", "-", url]
    creds = f'user = "{ctx.lab.haproxy.stats_user}:{password}"\n' if password is not None else ""
    out = transport.run(asker, cmd, input=creds, check=False).stdout
    body, _, code = out.rpartition("\n")
    return code, body


def check_stats_pages(transport: Transport, ctx: VerifyContext) -> list[Row]:
    lab = ctx.lab
    port = lab.haproxy.stats_port
    if not port:
        return [skip("stats pages", "disabled (halab:haproxy.statsPort: 0)")]
    results = []
    for lb in lab.load_balancers:
        u = f"http://{lb.address}:{port}/;csv"
        anon, _ = _get(transport, ctx, u, None)
        _, body = _get(transport, ctx, u, ctx.stats_password)
        shown = f"{lab.services[0].haproxy_backend}," in body
        results.append((lb.name, anon == "401" and shown, anon, "stats" if shown else "none"))
    fig = ", ".join(f"{n}: {code} without the password, {got} with it" for n, _, code, got in results)
    return [Row("stats page on every load balancer, behind its password", all(r[1] for r in results), fig)]


SERVER_STATE = re.compile(r'^haproxy_server_status\{proxy="([^"]+)",server="([^"]+)",state="([A-Z_]+)"\} 1$', re.M)
BGP_TEXTFILE = PATHS["BGP_TEXTFILE"]
ANNOUNCED = re.compile(r'^halab_vip_announced\{vip="([^"]+)"\} ([01])$', re.M)
VRRP_STATE = re.compile(r'^halab_vrrp_state\{instance="[^"]+",state="([A-Z]+)"\} 1$', re.M)


def check_metrics(transport: Transport, ctx: VerifyContext) -> list[Row]:
    """HAProxy's Prometheus exporter on every load balancer (/metrics on the stats port, behind
    the same password): every server of every pool is there, UP; and the node's VRRP state as
    the notify hook exported it: MASTER on the VIP's holder, BACKUP elsewhere. In ecmp mode,
    instead of VRRP's: the watcher's announcement of the VIP, 1 on every load balancer."""
    lab = ctx.lab
    what = "the VIP announced" if lab.mode == "ecmp" else "the node's VRRP state"
    name = f"Prometheus metrics on every load balancer: each server's state, {what}"
    port = lab.haproxy.stats_port
    if not port:
        return [skip(name, "disabled with the stats page (halab:haproxy.statsPort: 0)")]
    held = holders(transport, lab) if lab.mode == "active-standby" else []
    want = {(s.haproxy_backend, b.name) for s in lab.services for b in lab.pool(s)}
    figs, ok = [], True
    for lb in lab.load_balancers:
        u = f"http://{lb.address}:{port}/metrics"
        anon, _ = _get(transport, ctx, u, None)
        code, body = _get(transport, ctx, u, ctx.stats_password)
        servers = {(px, srv): state for px, srv, state in SERVER_STATE.findall(body) if (px, srv) in want}
        up = sum(1 for v in servers.values() if v == "UP")
        textfile, pattern = (BGP_TEXTFILE, ANNOUNCED) if lab.mode == "ecmp" else (VRRP_TEXTFILE, VRRP_STATE)
        states = pattern.findall(transport.run(lb.name, ["cat", textfile], check=False).stdout)
        state = states[0] if len(states) == 1 else "none"
        if lab.mode == "ecmp":  # this VIP, announced
            expected = (str(lab.vip), "1")
            if state == "none":
                shown = "announced none"
            else:  # and the address, when it is not the VIP
                shown = f"announced {state[1]}" + ("" if state[0] == expected[0] else f" for {state[0]}")
        else:
            expected, shown = "MASTER" if held == [lb.name] else "BACKUP", f"VRRP {state}"
        ok = ok and anon == "401" and code == "200" and up == len(want) and state == expected
        figs.append(f"{lb.name}: {anon} without the password; {up}/{len(want)} servers UP; {shown}")
    return [Row(name, ok, "; ".join(figs) + f" ({textfile})")]
