"""The VM lab's engine orders deletes as Pulumi's does (pkg/resource/deploy/step_generator.go):
the dependents a delete-before-replace replaces go first, a Command's delete script runs, a
resource replaced create-first loses its old self at the end, and a destroy goes dependents
first. Without libvirt or guests: the Commands' runs are recorded."""

from __future__ import annotations

import pulumi
import pytest

from halab.drivers.program_runtime import STACK_REFERENCE, Reg, stored_asset
from halab.drivers.vmlab import engine as engine_mod
from halab.drivers.vmlab.engine import COMMAND, COPY, Engine, Entry, State

DOMAIN = "libvirt:index/domain:Domain"
VOLUME = "libvirt:index/volume:Volume"
TRIGGERS = ["triggers[*]"]


@pytest.fixture
def ran(monkeypatch) -> list[tuple[str, str]]:
    """Each Command script the engine runs: (its host, the script's input name)."""
    calls: list[tuple[str, str]] = []

    def run(inputs, wrap, log=None, timeout=0, script="create"):
        calls.append((inputs["connection"]["host"], script))
        return engine_mod.command.Result("", "")

    monkeypatch.setattr(engine_mod.command, "run", run)
    return calls


def cmd(urn: str, host: str, deps: list[str], triggers_from: list[str], delete: bool = False) -> Entry:
    inputs = {"connection": {"host": host}, "create": "c", "triggers": ["t"], "stdin": "s"}
    if delete:
        inputs["delete"] = "d"
    return Entry(urn, COMMAND, urn, inputs, inputs, "", deps, {"triggers": triggers_from}, TRIGGERS)


def lab_state(tmp_path) -> State:
    """Two guests (domains a, b); on a: a step, then a second one after it (depends_on only);
    on the load balancer (host lb): a gate for a, with a delete script, after a's second step."""
    state = State(tmp_path / "state.json")
    for e in [
        Entry("a", DOMAIN, "uuid-a", {"memory": 1}, {}, "", [], {}, []),
        Entry("b", DOMAIN, "uuid-b", {"memory": 1}, {}, "", [], {}, []),
        cmd("a-step1", "10.0.0.1", ["a"], ["a"]),
        cmd("a-step2", "10.0.0.1", ["a-step1", "a"], ["a"]),
        cmd("a-gate", "lb", ["a", "a-step2"], ["a"], delete=True),
        cmd("b-step1", "10.0.0.2", ["b", "a-gate"], ["b"]),  # after a's gate, not made from a
    ]:
        state.entries[e.urn] = e
    return state


def make_engine(state: State) -> Engine:
    return Engine(state, lambda *a, **k: None, lambda argv: argv, log=lambda _: None)


def test_a_delete_before_replace_replaces_the_dependents_made_from_it(tmp_path):
    eng = make_engine(lab_state(tmp_path))
    found = [e.urn for e in eng.dependent_replacements(eng.state.entries["a"])]
    # every Command whose trigger holds a's ID, in dependency order; b's step depends on a's
    # gate only by order, so stays
    assert found == ["a-step1", "a-step2", "a-gate"]
    eng.registered.add("a-step2")  # registered already this run: it cannot depend on a
    assert [e.urn for e in eng.dependent_replacements(eng.state.entries["a"])] == ["a-step1", "a-gate"]


def test_an_input_that_a_command_applies_in_place_does_not_replace_it(tmp_path):
    """A drain names its load balancer's guest in `create`, not in its triggers: a new load
    balancer is an update of it (its create runs again there), never a delete."""
    eng = make_engine(lab_state(tmp_path))
    drain = cmd("a-drain", "lb", ["a", "a-step2", "b"], ["b"], delete=True)
    drain.property_deps["create"] = ["a"]
    eng.state.entries[drain.urn] = drain
    assert "a-drain" not in [e.urn for e in eng.dependent_replacements(eng.state.entries["a"])]
    assert "a-drain" in [e.urn for e in eng.dependent_replacements(eng.state.entries["b"])]


def test_a_commands_delete_runs_its_delete_script(tmp_path, ran):
    eng = make_engine(lab_state(tmp_path))
    eng._delete(eng.state.entries["a-step1"])  # no delete script: nothing runs
    eng._delete(eng.state.entries["a-gate"])
    assert ran == [("lb", "delete")]
    assert "a-gate" not in eng.state.entries


def test_a_destroy_deletes_dependents_first_and_runs_the_delete_scripts(tmp_path, ran, monkeypatch):
    eng = make_engine(lab_state(tmp_path))
    gone: list[str] = []
    real = eng._delete
    monkeypatch.setattr(eng, "_delete", lambda e, forget=True: (gone.append(e.urn), real(e, forget)))
    monkeypatch.setattr(engine_mod, "LIBVIRT_TYPES", {})  # no libvirt here
    eng.destroy()
    assert not eng.state.entries
    assert gone.index("a-gate") < gone.index("a-step2") < gone.index("a-step1") < gone.index("a")
    assert gone.index("b-step1") < gone.index("a-gate")
    assert ran == [("lb", "delete")]


def test_an_old_self_replaced_create_first_is_deleted_at_the_end_and_its_successor_kept(tmp_path, ran):
    eng = make_engine(lab_state(tmp_path))
    old = eng.state.entries["a-gate"]
    new = Entry(**{**old.__dict__, "id": "new-id"})
    eng.state.entries["a-gate"] = new
    eng.condemned.append(old)
    eng.registered = set(eng.state.entries)
    assert eng.delete_unregistered() == ["a-gate"]
    assert ran == [("lb", "delete")]
    assert eng.state.entries["a-gate"].id == "new-id"


def test_the_program_reads_its_last_outputs_through_a_stack_reference(tmp_path):
    state = State(tmp_path / "state.json")
    state.extra["outputs"] = {"load_balancers": {"lb1": "10.0.0.1"}}
    eng = make_engine(state)
    args = pulumi.runtime.MockResourceArgs(STACK_REFERENCE, "halab-deployed", {"name": "o/p/s"}, "", "", True)
    _, outputs = eng.mocks.new_resource(args)
    assert outputs["outputs"] == {"load_balancers": {"lb1": "10.0.0.1"}}


def test_a_copy_writes_its_file_and_an_update_copies_only_new_bytes_or_a_new_place(tmp_path):
    """CopyToRemote as pulumi-command v1.2.1 does it: the file asset's bytes at the remote path
    (relative: in the user's home), its directories made; an update copies again only when the
    source's hash or the remote path changed (copyController.go Update). The engine's ssh is
    replaced by bash in a home directory here; the rest is the VM lab's own code."""
    home = tmp_path / "home"
    home.mkdir()
    in_home = lambda argv: ["bash", "-c", f"cd {home} && {argv[-1]}"]  # noqa: E731 (ssh's last word: the command)
    eng = Engine(State(tmp_path / "state.json"), lambda *a, **k: None, in_home, log=lambda _: None)
    src = tmp_path / "library.sh"
    src.write_text("echo one\n")
    old = {
        "connection": {"host": "10.0.0.1", "user": "halab", "privateKey": "key", "dialErrorLimit": 1},
        "source": stored_asset(pulumi.FileAsset(str(src))),
        "remotePath": ".cache/halab/library-1.sh",
        "triggers": ["1"],
    }
    made = eng._create(COPY, "copy", "", old)
    copied = home / ".cache/halab/library-1.sh"
    assert copied.read_text() == "echo one\n" and made.outputs == old
    entry = Entry("copy", COPY, made.id, old, made.outputs)
    copied.unlink()
    eng._update(COPY, "", entry, {**old, "connection": {**old["connection"], "port": 2222}})
    assert not copied.exists()  # the same bytes at the same place: not copied again
    src.write_text("echo two\n")
    eng._update(COPY, "", entry, {**old, "source": stored_asset(pulumi.FileAsset(str(src)))})
    assert copied.read_text() == "echo two\n"
    eng._update(COPY, "", entry, {**old, "source": stored_asset(pulumi.FileAsset(str(src))), "remotePath": "lib.sh"})
    assert (home / "lib.sh").read_text() == "echo two\n"


def test_a_local_command_runs_here_with_its_interpreter_and_environment(tmp_path):
    out = tmp_path / "out"
    inputs = {"create": f'echo "$HALAB_X" >{out}; echo $BASH_VERSION', "interpreter": ["/bin/bash", "-c"]}
    r = engine_mod.command.run_local({**inputs, "environment": {"HALAB_X": "fetched"}})
    assert out.read_text() == "fetched\n" and r.stdout.strip()  # bash, not sh
    with pytest.raises(engine_mod.command.CommandError, match="exited 3"):
        engine_mod.command.run_local({"create": "exit 3"})


def test_an_ignored_input_keeps_its_old_value_before_the_diff(tmp_path):
    """As the engine does (step_generator.go 1264-1268): the base volume's `source`, a path in
    the user's cache, differs for another user; ignored, the volume is the same, where without
    ignoreChanges a volume's any change replaces it."""
    old = {"name": "base-1.qcow2", "source": "/root/.cache/halab/images/a.img"}
    new = {"name": "base-1.qcow2", "source": "/home/ops/.cache/halab/images/a.img"}
    eng = make_engine(State(tmp_path / "state.json"))
    eng.state.entries["v"] = Entry("v", VOLUME, "key-1", old, old, "", [], {}, [])
    reg = Reg("v", VOLUME, "v", "", [], dict(new), set(), "", ignore_changes=["source"])
    assert eng._apply(reg, custom=True) == ("key-1", old, "same")  # no provider call: nothing to do
    assert reg.inputs == old  # what the state keeps
    assert not eng._updatable(VOLUME, eng.state.entries["v"], new, [])  # not ignored: a replacement
    assert engine_mod.ignoring(["source"], {"name": "x"}, new) == new  # nothing old: the new value
    with pytest.raises(engine_mod.EngineError):
        engine_mod.ignoring(["disks[0].file"], old, new)
