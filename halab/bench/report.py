"""docs/benchmarks.md and its charts, from one run's measurements."""

from __future__ import annotations

import platform
import time
from pathlib import Path

from halab.bench.handoff import HANDOFF_AFTER, KEPT_SESSIONS, ForwardCost, Kept
from halab.bench.measure import REQUEST_INTERVAL, FaultResult, LabCost, Soak, WrkResult
from halab.bench.profiles import DESCRIPTIONS
from halab.verify.reload import ReloadPhase


def failover_chart(results: dict[str, dict[str, FaultResult]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(results)
    faults = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    width = 0.8 / len(profiles)
    for i, prof in enumerate(profiles):
        med = [results[prof][f].seconds.median for f in faults]
        lo = [results[prof][f].seconds.median - results[prof][f].seconds.low for f in faults]
        hi = [results[prof][f].seconds.high - results[prof][f].seconds.median for f in faults]
        xs = [j + (i - (len(profiles) - 1) / 2) * width for j in range(len(faults))]
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, label=prof)
    ax.set_xticks(range(len(faults)), faults)
    ax.set_ylabel("seconds to the first successful request")
    ax.set_title("Failover time per fault (median, min–max over trials)")
    ax.legend(title="profile")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def timeline_chart(results: dict[str, dict[str, FaultResult]], fault: str, path: Path) -> None:
    """Requests through the VIP per 100 ms around one trial's fault, per profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    for prof, faults in results.items():
        d = faults[fault].example
        if d is None:
            continue
        bins: dict[int, int] = {}
        for s in d.samples:
            b = int((s.start - d.t_fault) * 10 // 1)
            bins[b] = bins.get(b, 0) + (1 if s.ok else 0)
        # only while the sampler ran (it starts just before the fault and stops once restored)
        xs = list(range(max(-10, min(bins) + 1), min(60, max(bins))))
        ax.plot([x / 10 for x in xs], [bins.get(x, 0) * 10 for x in xs], label=prof, drawstyle="steps-post")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_xlabel(f"seconds since the fault ({fault})")
    ax.set_ylabel("successful requests / s")
    ax.set_title("Successful requests through the VIP across a failover (one trial per profile, 100 ms bins)")
    ax.legend(title="profile")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cost_chart(cost: dict[int, dict[str, float]], labs: list[LabCost], path: Path) -> None:
    """How each cost grows with the number of backends: the program and the render (left), the
    lab's build and read-only verify (middle), memory per node (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (prog, lab, mem) = plt.subplots(1, 3, figsize=(12, 3.8), dpi=110)
    ns = list(cost)
    prog.plot(ns, [cost[n]["program_s"] for n in ns], marker="o", label="program under mocks")
    prog.plot(ns, [cost[n]["bare_s"] for n in ns], marker=".", linestyle=":", label="as many bare Commands")
    prog.plot(ns, [cost[n]["render_s"] for n in ns], marker="o", label="render every host's files")
    prog.set_title("Pulumi program")
    if labs:
        xs = [c.backends for c in labs]
        lab.plot(xs, [c.up_s for c in labs], marker="o", label="netns-lab up")
        lab.plot(xs, [c.verify_s for c in labs], marker="o", label="verify --read-only")
        mem.plot(xs, [c.lb_mib for c in labs], marker="o", label="one load balancer")
        mem.plot(xs, [c.backend_mib for c in labs], marker="o", label="one backend")
        mem.plot(xs, [c.host_mib_per_node for c in labs], marker="o", label="host memory taken / node")
    lab.set_title("namespace lab, 2 load balancers")
    mem.set_title("memory per node")
    for ax, unit in ((prog, "seconds"), (lab, "seconds"), (mem, "MiB")):
        ax.set_xlabel("backends")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(
    failover: dict[str, dict[str, FaultResult]],
    dataplane: dict[str, dict[str, WrkResult]] | None,
    reloads: dict[str, ReloadPhase] | None,
    cost: dict[int, dict[str, float]] | None,
    trials: int,
    seconds: float,
    charts: list[str],
    busy: dict[str, int] | None = None,
    soaks: dict[str, Soak] | None = None,
    labs: list[LabCost] | None = None,
    state: dict[int, dict[str, float]] | None = None,
    kept: dict[str, dict[str, Kept]] | None = None,
    forward: ForwardCost | None = None,
    scale: list[str] | None = None,
    ecmp_failover: list[str] | None = None,
) -> str:
    """The report; `busy`: VRRP state changes per load balancer while wrk loaded the data plane;
    `soaks`: the fast stack left alone, idle and under load; `state`: the Pulumi state's size;
    `scale`: ecmp mode's scale-out section (scaleout.section), after the data plane's;
    `ecmp_failover`: ecmp mode's faults (ecmp_failover.section), after active-standby's."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `scripts/bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()}, Linux {platform.release()}, in {seconds:.0f} s. Every figure comes from this one "
        "run, in the namespace lab (one host: all nodes share its CPUs, so treat absolute numbers as "
        "relative ones).",
        "",
        "## Profiles",
        "",
        "| profile | settings |",
        "| --- | --- |",
        *[f"| `{p}` | {DESCRIPTIONS[p]} |" for p in failover],
        "",
        "## Failover",
        "",
        f"A request every {REQUEST_INTERVAL * 1000:.0f} ms from the outside client through the VIP, sent "
        "whether or not the earlier ones have answered (a population of clients: one that waits for each "
        "answer sees an outage end up to its timeout late), each given 0.3 s; "
        f"{trials} trials per fault and profile, the profiles' labs side by side with the soak's two "
        "(their timers, not the CPU, set these figures). *Seconds*: from the moment the fault took effect "
        "(the node's own timestamp, taken just before the signal or the link cut, not when the benchmark "
        "asked for it) to the end of the first successful request after the last failed one (0 when none "
        "failed: the VIP moved between two requests). *VIP moved*: from the same moment to the new "
        "master's own record of its MASTER state (keepalived's notify hook, a few milliseconds after the "
        "transition; the nodes share this host's clock): the takeover itself, without a client's sampling. "
        "Restore: the faulted node "
        "brought back; with preemption it takes the VIP back. Median (min–max, n). *VIP holders*: the "
        "most load balancers holding the VIP at once over two consecutive samples 50 ms apart (split "
        "brain), and in brackets in one sample "
        "(a VRRP transition can show both nodes for a few milliseconds, or the reads straddle it).",
        "",
        "| fault | profile | seconds | VIP moved | failed requests | restore: seconds | restore: failed "
        "| VIP holders |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    faults = list(next(iter(failover.values())))
    for fault in faults:
        for prof, res in failover.items():
            r = res[fault]
            lines.append(
                f"| {fault} | `{prof}` | {r.seconds.text()} | {r.takeover.text(digits=3) if r.takeover.n else '-'} "
                f"| {r.failed.text('', 0)} | {r.restore_seconds.text()} | "
                f"{r.restore_failed.text('', 0)} | {r.max_holders} ({r.max_holders_one_sample}) |"
            )
    # one line per profile and fault
    errors = [f"- `{p}`, {f}: {'; '.join(r.errors)}" for p, res in failover.items() for f, r in res.items() if r.errors]
    if errors:
        lines += ["", "Trials that did not recover within the 20 s bound (∞ in the figures above):", "", *errors]
    lines += ["", *(ecmp_failover or []), *[f"![{c}]({c})" for c in charts], ""]
    if kept:
        lines += handoff_section(kept, forward)
    if soaks:
        lines += [
            "## Stability: the fast stack left alone",
            "",
            "Short timers are worth nothing if the VIP flaps. Two labs of `examples/Pulumi.fast.yaml` ran "
            "beside the drills above, on the same 2 cores, with no fault injected: one idle, one under wrk "
            "(1 thread, 8 connections, a new connection per request) through its VIP all along. A state "
            "change is a line of a load balancer's VRRP log (halab-notify); with no fault there must be none.",
            "",
            "| lab | seconds | VRRP state changes | load through the VIP |",
            "| --- | --- | --- | --- |",
        ]
        for mode, sk in soaks.items():
            load = f"{sk.load.rps:,.0f} requests/s, {sk.load.errors} errors" if sk.load else "none"
            changes = ", ".join(f"{lb} {n}" for lb, n in sk.changes.items())
            lines.append(f"| {mode} | {sk.seconds:.0f} | {changes} | {load} |")
        lines.append("")
    if dataplane:
        vip, direct = list(dataplane)
        lines += [
            "## Data plane",
            "",
            "wrk (1 thread, 8 connections) from the outside client, short HTTP requests, the `default` "
            "profile; the two paths measured one after the other in this run. *Straight to a backend* is not "
            "free of the load balancer either: the backend's gateway is the VIP, so its replies are forwarded "
            "by the master's kernel (not proxied). wrk's latency excludes connection set-up. Each path has its own "
            "client address: a backend holds the load balancer's transparent connections (from the client's "
            "address) in TIME_WAIT, and a direct connection from that same address on one of those tuples "
            "carries other TCP timestamps, looks old and waits 1 s for its SYN to be sent again (about 150 "
            "requests/s: what an earlier run measured and could not explain). The client also reuses TIME_WAIT "
            "ports (`tcp_tw_reuse=1`), or its one address runs out of ephemeral ports within seconds.",
            "",
            "| path | connections | requests/s | p50 ms | p99 ms | errors |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for path, modes in dataplane.items():
            for mode, w in modes.items():
                lines.append(f"| {path} | {mode} | {w.rps:,.0f} | {w.p50_ms:.2f} | {w.p99_ms:.2f} | {w.errors} |")
        lines += [
            "",
            "| connections | VIP / direct requests/s | VIP / direct p50 | VIP / direct p99 | what the CPU allows |",
            "| --- | --- | --- | --- | --- |",
        ]
        for mode in dataplane[vip]:
            a, b = dataplane[vip][mode], dataplane[direct][mode]
            allows = f"{sum(b.cpu_ms.values()) / sum(a.cpu_ms.values()):.2f}" if a.cpu_ms and b.cpu_ms else "-"
            lines.append(
                f"| {mode} | {a.rps / b.rps:.2f} | {a.p50_ms / b.p50_ms:.2f} | {a.p99_ms / b.p99_ms:.2f} | {allows} |"
            )
        roles = list(next(iter(dataplane[vip].values())).cpu_ms)
        if roles:
            lines += [
                "",
                "*Where the time goes*: CPU time per request of each role's processes while wrk ran (user and "
                "system, from `/proc`; the kernel's network work is counted in the process whose send set it off, "
                "as a veth delivers in the sender's context). Every node shares the host's 2 cores, so the VIP's "
                "rate is bounded by the CPU all its parts take per request: *what the CPU allows* is the direct "
                "path's total over the VIP path's, the ratio a saturated host can reach however haproxy is tuned. "
                "Through the VIP each request is two TCP connections in the kernel (client to haproxy, haproxy to "
                "the backend) instead of one.",
                "",
                "| path | connections | " + " | ".join(f"{r} ms" for r in roles) + " | total ms |",
                "| --- | --- | " + " | ".join("---" for _ in roles) + " | --- |",
            ]
            for path, modes in dataplane.items():
                for mode, w in modes.items():
                    cells = " | ".join(f"{w.cpu_ms.get(r, 0):.3f}" for r in roles)
                    lines.append(f"| {path} | {mode} | {cells} | {sum(w.cpu_ms.values()):.3f} |")
        lines.append("")
    if busy is not None:
        lines += [
            "Busy is not hung: VRRP state changes while wrk loaded haproxy (the runs above): "
            + ", ".join(f"{lb} {n}" for lb, n in busy.items())
            + ". The watcher asks haproxy's health frontend every 0.1 s all along; a loaded haproxy answers it.",
            "",
        ]
    lines += scale or []
    if reloads:
        lines += [
            "## Reloads",
            "",
            "Under steady load (a request every 10 ms from 13 client addresses, `default` profile), every load "
            "balancer's haproxy step re-run with a backend removed, then added back: a master-worker reload each.",
            "",
            "| change | reloads | failed requests | requests |",
            "| --- | --- | --- | --- |",
            *[f"| {k} | {v.reloads} | {v.failed} | {v.requests} |" for k, v in reloads.items()],
            "",
        ]
    if cost or labs or state:
        lines += ["## How costs grow", ""]
    if cost:
        biggest = max(cost)
        big = cost[biggest]
        lines += [
            "Wall time of evaluating the Pulumi program under mocks (no engine, no provider: the mock monitor "
            "counts registrations without decoding them), for 2 load "
            "balancers and N backends, each measurement in a fresh interpreter as `pulumi up` runs the program "
            f"(`halab/bench/program.py`; times and memory are medians of {big['runs']:.0f} runs). "
            f"{_per_backend(cost)}Beside it: the same program with Python's cyclic "
            "collector on (`__main__.py` turns it off: the graph lives until the program exits, and each "
            "collection only rescans it), the Pulumi SDK's own floor (as many bare `remote.Command`s under the "
            "same mocks), the memory the program added to its interpreter (with and without the collector), and "
            "rendering every host's files "
            f"(`scripts/render`, into memory). At {biggest} backends the floor is "
            f"{big['bare_s'] / big['program_s']:.0%} of the program's time.",
            "",
            "| backends | resources | program s | with the collector s | bare Commands s | program MiB "
            "| with the collector MiB | render s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *[
                f"| {n} | {c['resources']:.0f} | {c['program_s']:.2f} | {c['collect_s']:.2f} | {c['bare_s']:.2f} "
                f"| {c['mib']:.0f} | {c['collect_mib']:.0f} | {c['render_s']:.3f} |"
                for n, c in cost.items()
            ],
            "",
        ]
    if state:
        lines += state_section(state)
    if labs:
        lines += [
            "`netns-lab up` (every node's steps, one node after the other), then `verify --read-only`, "
            "for 2 load balancers and N backends, one lab at a time. Memory: the proportional set size of a "
            "node's processes (shared pages split among their users), and the host's available memory the "
            "whole lab took, per node.",
            "",
            "| backends | up s | verify s | verify failed | MiB per load balancer | MiB per backend "
            "| host MiB per node |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *[
                f"| {c.backends} | {c.up_s:.1f} | {c.verify_s:.1f} | {c.verify_failed} | {c.lb_mib:.1f} "
                f"| {c.backend_mib:.1f} | {c.host_mib_per_node:.1f} |"
                for c in labs
            ],
            "",
        ]
    return "\n".join(lines)


def _per_backend(cost: dict[int, dict[str, float]]) -> str:
    """What each backend adds to the program, from two sizes measured (none from one)."""
    if len(cost) < 2:
        return ""
    lo, hi = min(cost), max(cost)
    per = (cost[hi]["resources"] - cost[lo]["resources"]) / (hi - lo)
    return f"The program registers {per:.0f} resources per backend. "


def state_section(state: dict[int, dict[str, float]]) -> list[str]:
    """The state's size per size of the lab (measure.state_size): the same on every run."""
    return [
        "The Pulumi state the program makes, for 2 load balancers and N backends under the same mocks "
        "(`halab/bench/state.py`; the same bytes on every run): every resource's inputs and outputs, as the "
        "engine stores them (a Command's outputs echo its inputs; a secret counted as its ciphertext), in "
        "compact JSON. Not counted: a Command's stdout and stderr, each resource's URN and dependencies. The "
        "step bundles are each Command's stdin, stored twice: what was rendered for each step (a roll-out gate "
        "too), in plain text. Each node's library (lib.sh, its step scripts and the static node files, "
        "compressed) is not in the state: it is copied to the node as a file (a `CopyToRemote` of a file "
        "asset, of which the state keeps the path and the hash), and the last column is what those copies "
        "carry. 1 MB: 1,000,000 bytes.",
        "",
        "| backends | resources | state MB | of which the step bundles MB | libraries copied, not in the state MB |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {n} | {s['resources']:.0f} | {s['state_bytes'] / 1e6:.2f} | {s['bundle_bytes'] / 1e6:.2f} "
            f"| {s['copied_bytes'] / 1e6:.2f} |"
            for n, s in state.items()
        ],
        "",
    ]


def handoff_section(kept: dict[str, dict[str, Kept]], forward: ForwardCost | None) -> list[str]:
    """Connections kept through each fault, per profile; the second chance's cost."""
    profiles = list(kept)
    faults = list(next(iter(kept.values())))
    lines = [
        "## Connections kept",
        "",
        f"{KEPT_SESSIONS} long-lived sessions (HTTP keep-alive, a request a second each) opened through the "
        "master, then each fault of the drills on it, once per profile: the sessions still answered, and "
        "ended cleanly by their client, a few seconds after the VIP moved. *clean stop (maintenance)* is the "
        "planned hand-off (keepalived stopped: the old master keeps its connections, the new one forwards "
        "their packets to it; [docs/handoff.md](handoff.md)). A dead haproxy takes its connections with it; "
        "a cut link leaves them unreachable. A SIGKILLed keepalived is a hand-off too: its hook releases the VIP "
        "and haproxy lives on. Each fault's sessions open once the master, restored from the one before, "
        "calls its servers UP again (back from a cut link, the `fast` master takes the VIP before that, and "
        "closes new connections unanswered meanwhile: see the restore rows above). `fast-nosc` is the "
        "control: without the second chance, nothing is kept.",
        "",
        "| fault | " + " | ".join(f"`{p}`" for p in profiles) + " |",
        "| --- |" + " --- |" * len(profiles),
    ]
    for fault in faults:
        cells = []
        for p in profiles:
            k = kept[p].get(fault)
            cells.append("-" if k is None else f"{k.kept}/{k.total}" + (f" ({k.lost})" if k.lost else ""))
        lines.append(f"| {fault} | " + " | ".join(cells) + " |")
    lines.append("")
    if forward:
        f = forward
        lines += [
            "### What the second chance costs",
            "",
            f"wrk (1 thread, 8 connections, keep-alive) through the VIP, `default` profile, alone on the host, "
            f"{len(f.pairs)} pairs of runs of {f.pairs[0].seconds} s, one after the other: its connections held by "
            f"the VIP's holder (*direct*), then held by the old holder after a planned hand-off {HANDOFF_AFTER:g} s "
            "into the run (*forwarded*: each of their packets crosses the new holder first, counted by its "
            "second-chance marks). CPU: every role's processes per request (a veth delivers in the sender's "
            "context, so the forwarding is in there). Median (min–max, n) over the pairs.",
            "",
            "| figure | forwarded against direct |",
            "| --- | --- |",
            f"| packets forwarded per request (its request and the backend's reply) | "
            f"{f.spread('packets_per_request').text('', 1)} |",
            f"| added time per request, p50 | {f.spread('added_p50_us').text('µs', 0)} |",
            f"| throughput, forwarded / direct | {f.spread('throughput').text('', 2)} |",
            f"| CPU per forwarded packet | {f.spread('cpu_per_packet_us').text('µs', 1)} |",
            "",
        ]
    return lines
