"""The tree shows the layers (docs/architecture.md, "The layers"): every module sits in its
layer's folder, and imports only from its own floor and the floors below it, with no cycle. A
newcomer then knows where a file is and where a new one goes; a move that breaks the layering
fails here, not in a review. Fast: it reads the source, it runs nothing."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# Floors, lowest first: what a node receives; the pure core; the drivers (the Pulumi components
# and the two labs); the verifier; the benchmark.
FLOORS = {
    "halab.node": 0,
    "halab.core": 1,
    "halab.drivers": 2,
    "components": 2,
    "halab.verify": 3,
    "halab.bench": 4,
}
TOP = {
    ".ci", ".gitignore", ".shellcheckrc", "Pulumi.yaml", "Pulumi.dev.yaml", "README.md", "__main__.py",
    "components", "docs", "examples", "halab", "pyproject.toml", "requirements.txt", "scripts", "tests",
}  # fmt: skip


def tracked() -> list[Path]:
    import subprocess

    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).exists()]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def floor_of(module: str) -> int | None:
    for prefix, floor in FLOORS.items():
        if module == prefix or module.startswith(prefix + "."):
            return floor
    return None


def project_imports(path: Path) -> set[str]:
    """Every project module `path` imports, at any depth (a function's own import counts: it
    runs as surely as one at the top, only later)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in ("halab", "components")}


def modules() -> dict[str, Path]:
    paths = [p for p in tracked() if p.suffix == ".py" and p.parts[len(ROOT.parts)] in ("halab", "components")]
    return {module_name(p): p for p in paths if module_name(p) != "halab"}  # the package: empty


def test_every_file_sits_in_its_layers_folder():
    """Nothing at the top but what the design card names, no module of halab/ outside a layer's
    folder, and scripts/ holds the command-line tools only (what nodes receive is halab/node/)."""
    top = {p.relative_to(ROOT).parts[0] for p in tracked()}
    assert top <= TOP, sorted(top - TOP)
    stray = [m for m in modules() if m.startswith("halab.") and floor_of(m) is None]
    assert stray == [], stray
    layers = {p.relative_to(ROOT / "halab").parts[0] for p in tracked() if p.is_relative_to(ROOT / "halab")}
    assert layers == {"__init__.py", "node", "core", "drivers", "verify", "bench"}, layers
    scripts = [p for p in tracked() if p.is_relative_to(ROOT / "scripts")]
    tools = [p.name for p in scripts if p.stat().st_mode & 0o111]
    assert sorted(p.name for p in scripts) == sorted([*tools, "debian-packages.txt"]), sorted(p.name for p in scripts)
    assert all(p.parent == ROOT / "scripts" for p in scripts), "scripts/ has no sub-folders: tools only"


def upward(mods: dict[str, Path]) -> list[str]:
    """Each import of `mods` that runs back up: to a floor above the importer's."""
    wrong = []
    for name, path in mods.items():
        mine = floor_of(name)
        assert mine is not None, name
        for imported in project_imports(path):
            theirs = floor_of(imported)
            if theirs is not None and theirs > mine:
                wrong.append(f"{name} (floor {mine}) imports {imported} (floor {theirs})")
    return wrong


def test_no_import_runs_back_up():
    """A module imports from its own floor and below: the core knows no driver, the drivers no
    verifier, the verifier no benchmark; halab/node/ is data, and imports nothing of ours."""
    mods = modules()
    assert upward(mods) == [], "\n".join(upward(mods))
    node = [n for n in mods if floor_of(n) == 0]
    assert node and all(project_imports(mods[n]) == set() for n in node), node


def test_no_import_cycle():
    """Between modules, counting every import: a cycle would make two rooms one."""
    mods = modules()
    graph = {m: {i for i in project_imports(p) if i in mods and i != m} for m, p in mods.items()}
    # a package's __init__ imported for a submodule is not an edge back
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*path[path.index(d) :], d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], cycles


def test_the_layer_check_sees_an_import_that_runs_back_up(tmp_path):
    """The check can fail: a core module that imports a driver, even inside a function, is
    named; a driver that imports the core is not."""
    bad, good = tmp_path / "bad.py", tmp_path / "good.py"
    bad.write_text("def f():\n    from halab.drivers import progress\n")
    good.write_text("from halab.core import plan\n")
    wrong = upward({"halab.core.bad": bad, "halab.drivers.good": good})
    assert sorted(wrong) == [
        "halab.core.bad (floor 1) imports halab.drivers (floor 2)",
        "halab.core.bad (floor 1) imports halab.drivers.progress (floor 2)",
    ], wrong


def test_the_namespace_lab_and_the_review_render_need_no_pulumi():
    """`scripts/netns-lab` and `scripts/render` run on a fresh host with Debian's Python (no
    .venv: the fresh-root test), which has no Pulumi SDK: nothing they import may need it. A
    module-level import of the VM lab's driver in the verifier broke exactly that once."""
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['pulumi'] = None; sys.path.insert(0, '.');"
        "import halab.drivers.netns.lab, halab.drivers.netns.topology, halab.drivers.progress;"
        "import halab.verify.checks, halab.verify.lab_access, halab.core.review, halab.core.stackfile"
    )
    p = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr[-2000:]


def test_every_role_module_holds_what_a_role_declares():
    """plan.ROLES maps each kind of node to a module of halab/core/roles/: each holds the
    protocol's constant and functions, with its parameters (a new kind is a module like these)."""
    import inspect

    from halab.core import plan

    for kind, role in plan.ROLES.items():
        assert isinstance(role.PACKAGES, tuple) and all(isinstance(p, str) for p in role.PACKAGES), kind
        for name in ("steps", "serving_steps", "gate_steps"):
            want = list(inspect.signature(getattr(plan.Role, name)).parameters)[1:]  # without self
            assert list(inspect.signature(getattr(role, name)).parameters) == want, (kind, name)
