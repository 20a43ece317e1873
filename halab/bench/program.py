"""The Pulumi program's cost under mocks, one measurement per fresh interpreter, as `pulumi up`
runs the program: timed in the benchmark's own process, each run would also pay for the runs
before it (the mocked runtime keeps their graphs reachable, and every collection rescans them).

    python -m halab.bench.program program N [--collect]   < base stack (JSON)
    python -m halab.bench.program render N                < base stack (JSON)
    python -m halab.bench.program bare COUNT
    python -m halab.bench.program state N                 < base stack (JSON)

`program` evaluates __main__.py for the base stack grown to N backends; `--collect` keeps
Python's cyclic collector on (__main__.py turns it off), to show what that saves. `render`
writes every host's files for it (`scripts/render`). `bare` registers COUNT plain remote
Commands with the collector off: the Pulumi SDK's own cost for that many registrations, the
floor under the program's. `state` sizes the Pulumi state the program makes for N backends
(halab/bench/state.py). Each prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

SECRETS = {"vrrpAuthPass": "bench123", "statsPassword": "bench-password-123"}


def _rss_mib() -> float:
    """Resident memory now: the run's graph stays alive until the interpreter exits (nothing
    collects it), so what a run added is its peak."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def _config(base: dict, backends: int) -> dict:
    from halab.bench.measure import sized_config

    return sized_config(base, backends, "halab")


def program(base: dict, backends: int, collect: bool) -> dict[str, float]:
    from halab.bench.counter import Counter
    from halab.core.stackfile import engine_form
    from halab.drivers.program_runtime import Mocks, run_program

    engine, secret_keys = engine_form(_config(base, backends), SECRETS)
    if collect:
        gc.disable = lambda: None  # what __main__.py does, undone
    # run_program turns the collector back on for the process that goes on (a test session),
    # which would sweep every object of the run on the clock: this one ends with the run
    gc.enable = lambda: None
    before = _rss_mib()
    t0 = time.perf_counter()
    counter = Counter(Mocks())
    run_program(engine, secret_keys, counter)
    return {
        "program_s": time.perf_counter() - t0,
        "resources": counter.count,
        "mib": _rss_mib() - before,
        "collector_on": gc.isenabled(),  # as the program left it
    }


def render(base: dict, backends: int) -> dict[str, float]:
    from halab.core import config, review
    from halab.core.model import Credentials

    lab = config.parse(_config(base, backends))
    # into memory: on this host's disk, creating the 1,500 files of 100 backends takes seconds
    # that measure the disk, not the rendering
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as d:
        t0 = time.perf_counter()
        review.write_tree(lab, Path(d), Credentials.placeholder())
        return {"render_s": time.perf_counter() - t0}


def bare(count: int) -> dict[str, float]:
    import pulumi
    import pulumi_command.remote as remote

    from halab.bench.counter import Counter
    from halab.drivers.program_runtime import Mocks

    counter = Counter(Mocks())
    pulumi.runtime.set_mocks(Mocks(), project="ha-lb-lab", stack="test", preview=False, monitor=counter)

    @pulumi.runtime.test
    def commands():
        gc.disable()  # as the program runs
        conn = remote.ConnectionArgs(host="192.0.2.1", user="halab")
        for i in range(count):
            remote.Command(f"bare-{i}", connection=conn, create="true", triggers=[str(i)])

    t0 = time.perf_counter()
    commands()
    return {"bare_s": time.perf_counter() - t0, "resources": counter.count}


def state(base: dict, backends: int) -> dict[str, float]:
    from halab.bench.state import state_size
    from halab.core.stackfile import engine_form

    size = state_size(*engine_form(_config(base, backends), SECRETS))
    return {
        "resources": size.resources,
        "state_bytes": size.total,
        "bundle_bytes": size.bundles,
        "copied_bytes": size.copied,
    }


def main(argv: list[str]) -> int:
    what, n = argv[1], int(argv[2])
    if what == "program":
        out = program(json.load(sys.stdin), n, "--collect" in argv[3:])
    elif what == "render":
        out = render(json.load(sys.stdin), n)
    elif what == "bare":
        out = bare(n)
    elif what == "state":
        out = state(json.load(sys.stdin), n)
    else:
        raise SystemExit(f"unknown measurement {what!r}: program, render, bare or state")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
