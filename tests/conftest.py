import inspect
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halab.core import stackfile  # noqa: E402

# The program refuses a stale SSH agent, as pulumi-command would fail on it: the suite does not
# depend on the shell it is run from (the agent tests set their own sockets).
os.environ.pop("SSH_AUTH_SOCK", None)


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory):
    """The program writes each node's library bundle into the user's cache
    (components/remote_steps.py LibraryFiles): the suite's runs, and the labs' that it starts,
    write into one of its own, not root's."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


# verify's rows per stack, every one asserted by the lab tests (docs/verify.md, "What verify proves")
VERIFY_ROWS = {"dev": 31, "lab3": 52, "pools": 48, "ecmp": 32}


def expected_rows(lab) -> list[str]:
    """The name of every row `verify` must print for this stack, in order, as patterns: `{LB}`
    stands for whichever load balancer was master, `{ADDR}` for an address. Written from the
    claims, not from the verifier's code: a row that goes missing or changes meaning fails."""
    lbs, last = [lb.name for lb in lab.load_balancers], lab.backends[-1].name
    web = next(s for s in lab.services if s.protocol == "http")  # the backend drills' service
    first = lab.pool(web)[0].name  # their victim
    ecmp = lab.mode == "ecmp"
    if ecmp:  # docs/ecmp.md: the router's view instead of the VIP's holder
        rows = []
        for lb in lbs:
            rows.append(f"BGP: {lb}'s session Established, announcing the VIP")
            if lab.bgp.bfd:
                rows.append(f"BFD: {lb}'s peer up ({lab.bgp.bfd.interval_ms} ms x {lab.bgp.bfd.multiplier})")
        rows.append(f"the router spreads {lab.vip} over every load balancer")
    else:
        rows = [
            "exactly one load balancer holds the VIP, the one expected",
            "VRRP adverts flow from the master to every backup",
        ]
    rows += [f"every backend server passes its health check on {lb}" for lb in lbs]
    for where in ("outside", "on-subnet"):
        rows += [f"{s.name} (:{s.port}) from the {where} client {{ADDR}}: backend sees it" for s in lab.services]
    if ecmp:  # each load balancer balances on its own: no claim on the backends' spread
        n, svc = len(lbs), lab.services[0].name
        rows.append(f"{svc}: 1200 new connections share the {n} load balancers within ±15% of even")
    for s in lab.services if not ecmp else ():
        rows.append(
            {
                "first": f"{s.name}: concurrent clients all go to the first backend, {lab.pool(s)[0].name} (first)",
                "source": f"{s.name}: each client address hashes to one backend, burst after burst (source)",
            }.get(s.balance, f"{s.name}: concurrent clients spread over its backends, within one ({s.balance})")
        )
    rows += [f"{s.name}: backends outside its pool refuse :{s.backend_port}" for s in lab.services
             if len(lab.pool(s)) < len(lab.backends)]  # fmt: skip
    rows += [f"{s.name}: each client address sticks to its backend" for s in lab.services if s.sticky]
    rows += [] if ecmp else ["VRRP from a non-peer (priority 254) is dropped before keepalived; the master stays"]
    rows += [
        "stats page on every load balancer, behind its password",
        "Prometheus metrics on every load balancer: each server's state, "
        + ("the VIP announced" if ecmp else "the node's VRRP state"),
        f"haproxy reloads under load ({last} removed, then back): no request fails",
        f"{first} stopped: out of rotation on every load balancer, no failure after detection",
        f"{first} started: back in rotation",
        f"{first} hung: out of rotation on every load balancer, no failure after detection",
        f"{first} resumed: back in rotation",
    ]
    # the TCP banner hung on the first backend of the first TCP service whose check asks it: out
    # for every such service it serves (a connect-only check cannot see a hang: no claim)
    asks = [s for s in lab.services if s.protocol == "tcp" and s.check.kind in ("smtp", "banner")]
    if asks:
        victim = lab.pool(asks[0])[0]
        names = ", ".join(s.name for s in asks if victim in lab.pool(s))
        rows += [
            f"{victim.name} banner hung: out of rotation for {names} on every load balancer",
            f"{victim.name} banner resumed: back in rotation",
        ]
    if ecmp:
        how = "BFD takes it out" if lab.bgp.bfd else "its hold timer takes it out"
        ceiling = (lab.bgp.bfd.detect_seconds if lab.bgp.bfd else lab.bgp.hold_seconds) + 0.2
        for lb, fault, what, limit in (
            (lbs[0], "haproxy killed", "its route withdrawn", 0.3),
            (lbs[1], "link cut", how, ceiling),
        ):
            rows += [
                f"{fault} on {lb}: {what} at the router (≤ {limit:.2f} s)",
                f"restore, {fault} on {lb}: back in the router's paths",
            ]
        rows += [
            f"haproxy killed on {lbs[0]}, then back: the others' sessions kept (second chance)",
            f"planned hand-off on {lbs[1]}, then back: every session kept, its own too",
        ]
        return rows
    rows += [
        "persistence survives failover: each client keeps its backend on the new master",
        "planned hand-off keeps connections (keepalived stopped on the master)",
    ]
    rule = "takes the VIP back (preemption)" if lab.vrrp.preempt else "stays backup (nopreempt)"
    for fault in ("haproxy killed", "haproxy hung", "keepalived killed", "link cut"):
        rows += [f"failover, {fault} on {{LB}}", f"restore, {fault}: {{LB}} {rule}"]
    rows.append("every VRRP state change is logged, timestamped, on each load balancer")
    return rows


def assert_rows(names: list[str], lab, stack: str) -> None:
    """`verify` printed exactly the rows the stack claims, by name, in order."""
    expected = expected_rows(lab)
    assert len(expected) == VERIFY_ROWS[stack], f"{len(expected)} rows claimed for {stack}"
    lb = "(" + "|".join(re.escape(n.name) for n in lab.load_balancers) + ")"
    patterns = [re.escape(e).replace(r"\{LB\}", lb).replace(r"\{ADDR\}", r"[\d.]+") for e in expected]
    for i, (name, pattern) in enumerate(zip(names, patterns, strict=False)):
        assert re.fullmatch(pattern, name), f"row {i + 1}: {name!r}, expected {expected[i]!r}"
    assert len(names) == len(expected), f"{len(names)} rows, {len(expected)} expected: {names[len(expected) :]}"


def row_names(table: str) -> list[str]:
    """The check column of a printed verify table (halab/verify/rows.py: table)."""
    lines = table.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("check ") and "result" in line)
    width = len(lines[i + 1].split("  ")[0])
    out = []
    for line in lines[i + 2 :]:
        if (
            len(line) <= width
            or line[width : width + 2] != "  "
            or line[width + 2 : width + 6] not in ("PASS", "FAIL", "SKIP")
        ):
            break
        out.append(line[:width].rstrip())
    return out


STACKS = {
    "dev": ROOT / "Pulumi.dev.yaml",
    "large": ROOT / "tests" / "stacks" / "Pulumi.large.yaml",
    "lab3": ROOT / "tests" / "stacks" / "Pulumi.lab3.yaml",
    "pools": ROOT / "tests" / "stacks" / "Pulumi.pools.yaml",
    "ecmp": ROOT / "tests" / "stacks" / "Pulumi.ecmp.yaml",
    "fast": ROOT / "examples" / "Pulumi.fast.yaml",  # shipped: users take it as is
}


def setup_tree(tree: Path) -> None:
    """A copy of scripts/setup in `tree` (run there, it reads that tree's stack files), with the
    project's render, which it runs to check a stack file."""
    (tree / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "scripts/setup", tree / "scripts/setup")
    shutil.copy(ROOT / "Pulumi.yaml", tree / "Pulumi.yaml")  # its requiredPulumiVersion
    if not (tree / "scripts/render").exists():
        os.symlink(ROOT / "scripts/render", tree / "scripts/render")


# What makes a test `slow` (pyproject.toml's marker; `scripts/test --fast` leaves them out): a
# module of whole labs, a fixture that starts nodes or a lab, or a body that asks for root and
# the nodes' tools. Read from the tests themselves, so a new test is sorted without a decorator.
SLOW_MODULES = {
    "test_netns_lab", "test_vm_lab", "test_fresh_machine", "test_verify_ssh",
    "test_libvirt_integration",
}  # fmt: skip
SLOW_FIXTURES = {"nodes", "lb_node", "labs", "lab_ecmp", "vmlab", "sshlab"}
SLOW_CALLS = re.compile(r"\b(need_root_and|need_commands|require_lab)\(")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fn = getattr(item, "function", None)
        source = ""
        if fn is not None:
            try:
                source = inspect.getsource(fn)
            except OSError:
                pass
        if (
            item.module.__name__ in SLOW_MODULES
            or item.module.__name__.startswith("test_mutations")  # test_mutations.py, _ecmp.py, ...
            or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
            or SLOW_CALLS.search(source)
        ):
            item.add_marker(pytest.mark.slow)


def need_commands(*commands: str) -> None:
    """A test that runs these tools (as any user): CI installs them (.ci/run), so under
    HALAB_REQUIRE_LABS=1 a missing one fails the test instead of skipping it."""
    require_lab([f"command {c}" for c in commands if shutil.which(c) is None])


def need_root_and(*commands: str) -> None:
    """Namespace tests need root and the node tools; under HALAB_REQUIRE_LABS=1 a missing one
    fails the test, naming it."""
    require_lab(
        (["root (network namespaces)"] if os.geteuid() != 0 else [])
        + [f"command {c}" for c in commands if shutil.which(c) is None]
    )


def require_lab(missing: list[str]) -> None:
    """A lab test's prerequisites: a skip naming what is missing, or a failure where the labs
    must run (HALAB_REQUIRE_LABS=1: CI, which installs everything, must never skip a lab)."""
    if not missing:
        return
    why = "this host lacks: " + "; ".join(missing)
    if os.environ.get("HALAB_REQUIRE_LABS") == "1":
        pytest.fail(f"HALAB_REQUIRE_LABS=1 and {why}")
    pytest.skip(why)


def engine_config(raw: dict, **secrets: str) -> tuple[dict[str, str], list[str]]:
    """A stack file's keys as the engine hands them to a program (halab/core/config.py: engine_form)."""
    return stackfile.engine_form(raw, secrets)


def cli_config(cfg: dict[str, str], secret_keys: list[str]) -> str:
    """The same config as `pulumi config --json --show-secrets` prints it."""
    return json.dumps({k: {"value": v, "secret": k in secret_keys} for k, v in cfg.items()})
