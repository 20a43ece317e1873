"""What the Pulumi engine does with the program's registrations, done here for real: a mock
monitor (halab/drivers/program_runtime.py's Recorder, so the registrations are recorded as the mocks tests
see them) that creates each custom resource when the program registers it and answers with
its real ID and outputs.

Registration order is the program's own: the SDK registers a resource once every input and
every `depends_on` it names has resolved, and a dependency resolves only when its own creation
has finished. So resources are created as the engine would create them, independent branches
in parallel; `order_violations` checks it afterwards against every dependency recorded.

A second `up` acts as `pulumi up --refresh`: a libvirt resource of the state that no longer
exists (deleted out of band) is dropped first, then each registration is diffed against the
state:
- same inputs: nothing is done (the old ID and outputs are returned);
- a Command whose `triggers` changed, or a resource whose `replaceOnChanges` inputs changed, or
  a libvirt resource with any change the provider cannot update in place: replaced. With
  `deleteBeforeReplace`, the resources of the state whose inputs come from it and whose diff,
  with those inputs unknown, replaces them are deleted first, dependents first, then it is
  deleted, then created (step_generator.go calculateDependentReplacements); without, it is
  created first and the old one deleted at the end;
- other changes: an update (a Domain's cloud-init disk or autostart; a Command runs `create`
  again);
and at the end, the replaced resources' old selves and the resources of the state the program
no longer registers are deleted, dependents first. A Command's delete runs its `delete` on its
old connection with its old stdin, as pulumi-command does. `destroy` deletes everything in
that same order (`pulumi destroy`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pulumi.runtime import rpc
from pulumi.runtime.mocks import _ensure_event_loop, _sync_await
from pulumi.runtime.proto import resource_pb2

from halab.drivers.program_runtime import Mocks, Recorder, Reg, registration
from halab.drivers.vmlab import command, schema
from halab.drivers.vmlab.provider import Libvirt, Outcome

Log = Callable[[str], None]

# Each libvirt type: the provider's (create, delete, exists), by method name of provider.Libvirt.
LIBVIRT_TYPES = {
    "libvirt:index/network:Network": ("create_network", "delete_network", "network_exists"),
    "libvirt:index/volume:Volume": ("create_volume", "delete_volume", "volume_exists"),
    "libvirt:index/cloudInitDisk:CloudInitDisk": ("create_cloudinit", "delete_volume", "volume_exists"),
    "libvirt:index/domain:Domain": ("create_domain", "delete_domain", "domain_exists"),
}
COMMAND = schema.COMMAND
COPY = schema.COPY
LOCAL_COMMAND = schema.LOCAL_COMMAND
TLS_KEY = "tls:index/privateKey:PrivateKey"
LIBVIRT_PROVIDER = "pulumi:providers:libvirt"


class EngineError(RuntimeError):
    pass


@dataclass
class Entry:
    """A resource as the state holds it."""

    urn: str
    type: str
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str = ""  # the provider's URN
    deps: list[str] = field(default_factory=list)
    property_deps: dict[str, list[str]] = field(default_factory=dict)
    replace_on_changes: list[str] = field(default_factory=list)


@dataclass
class Event:
    urn: str
    action: str  # create, update, replace, same, delete
    started: float
    ended: float


class State:
    """The VM lab's state file (0600: it holds the generated key and the secrets' bundles)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Entry] = {}
        self.extra: dict[str, Any] = {}
        if path.exists():
            data = json.loads(path.read_text())
            self.entries = {u: Entry(**e) for u, e in data.get("resources", {}).items()}
            self.extra = data.get("extra", {})
        self.lock = threading.Lock()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"resources": {u: asdict(e) for u, e in self.entries.items()}, "extra": self.extra}, f)
        tmp.replace(self.path)


def _provider_urn(ref: str) -> str:
    """A provider reference is `URN::ID`."""
    return ref.rsplit("::", 1)[0] if ref else ""


class Engine(Recorder):
    def __init__(
        self,
        state: State,
        run_on_hypervisor: Callable[..., Any],
        wrap_net: Callable[[list[str]], list[str]],
        log: Log = print,
    ):
        # a StackReference to the stack itself reads its last `up`'s outputs (components/rollout.py)
        super().__init__(Mocks(state.extra.get("outputs")))
        self.state = state
        self.run_on_hypervisor = run_on_hypervisor
        self.wrap_net = wrap_net
        self.log = log
        self.t0 = time.monotonic()
        self.events: dict[str, Event] = {}
        self.providers: dict[str, Libvirt] = {}  # by provider URN
        self.registered: set[str] = set()
        self.condemned: list[Entry] = []  # replaced, created first: the old ones, deleted at the end
        self.errors: list[str] = []
        self.lock = threading.Lock()

    # -- progress ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        with self.lock:
            self.log(f"[{time.monotonic() - self.t0:6.1f}s] {text}")

    # -- the monitor -------------------------------------------------------------------------
    def RegisterResource(self, request):  # noqa: N802 (the monitor's gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        _ensure_event_loop()
        reg = registration(urn, request)
        self.regs.append(reg)
        started = time.monotonic()
        self.registered.add(urn)
        try:
            rid, outputs, action = self._apply(reg, bool(request.custom))
        except Exception as e:  # reported at the end, as the engine reports every failed resource
            self.say(f"  x {request.name}: failed: {str(e).splitlines()[0][:200]}")
            with self.lock:
                self.errors.append(f"{request.name}: {e}")
            raise
        with self.lock:
            self.events[urn] = Event(urn, action, started, time.monotonic())
        obj = _sync_await(rpc.serialize_properties(outputs, {}))
        return resource_pb2.RegisterResourceResponse(urn=urn, id=rid, object=obj)

    # -- diff and act --------------------------------------------------------------------------
    def _apply(self, reg: Reg, custom: bool) -> tuple[str, dict[str, Any], str]:
        urn, typ, name, inputs = reg.urn, reg.type, reg.name, reg.inputs
        if not custom:
            return "", dict(inputs), "same"
        provider = _provider_urn(reg.provider)
        old = self.state.entries.get(urn)
        if typ == LIBVIRT_PROVIDER:
            rid = old.id if old else str(uuid.uuid4())
            self.providers[urn] = Libvirt(inputs.get("uri", ""), self.run_on_hypervisor)
            self._track(reg, rid, dict(inputs))
            return rid, dict(inputs), "same" if old is not None and old.inputs == inputs else "create"
        if old is not None and reg.ignore_changes:
            inputs = reg.inputs = ignoring(reg.ignore_changes, old.inputs, inputs)
        if old is not None and old.inputs == inputs:
            self._track(reg, old.id, old.outputs)
            return old.id, old.outputs, "same"
        if old is None:
            action = "create"
        elif self._updatable(typ, old, inputs, reg.replace_on_changes):
            action = "update"
        else:
            action = "replace"
        started = time.monotonic()
        self.say(f"  + {name}: {action} ({typ.split(':')[-1]})...")
        if action == "replace" and reg.delete_before_replace:
            for dependent in reversed(self.dependent_replacements(old)):
                self.say(f"  - {dependent.urn.rsplit('::', 1)[-1]}: delete (replaced with {name})")
                self._delete(dependent)
            self._delete(old)
        if action == "update":
            outcome = self._update(typ, provider, old, inputs)
        else:
            outcome = self._create(typ, name, provider, inputs)
        if action == "replace" and not reg.delete_before_replace:
            with self.lock:
                self.condemned.append(old)
        self._track(reg, outcome.id, outcome.outputs)
        self.say(f"  + {name}: {action}d in {time.monotonic() - started:.1f}s")
        return outcome.id, outcome.outputs, action

    def _track(self, reg: Reg, rid: str, outputs: dict[str, Any]) -> None:
        entry = Entry(
            reg.urn,
            reg.type,
            rid,
            reg.inputs,
            outputs,
            _provider_urn(reg.provider),
            reg.deps,
            reg.property_deps,
            reg.replace_on_changes,
        )
        with self.state.lock:
            self.state.entries[reg.urn] = entry
            self.state.save()

    def dependent_replacements(self, root: Entry) -> list[Entry]:
        """The resources of the state a delete-before-replace of `root` replaces, in dependency
        order: each whose inputs come from a resource so replaced, and whose diff with those
        inputs unknown replaces it (step_generator.go calculateDependentReplacements, lines
        3220-3361 at v3.259.0). Resources this run registered already cannot depend on it."""
        entries = self.state.entries
        replaced: dict[str, Entry] = {root.urn: root}
        order: list[Entry] = []
        for e in self._depending_on(root.urn):
            unknown = [k for k, urns in e.property_deps.items() if any(u in replaced for u in urns)]
            if not unknown or e.urn in self.registered or e.urn not in entries:
                continue
            guess = {**e.inputs, **{k: UNKNOWN for k in unknown}}
            if e.type in schema.PLANNED and schema.plan(e.type, e.inputs, guess, e.replace_on_changes) != "replace":
                continue
            replaced[e.urn] = e
            order.append(e)
        return order

    def _depending_on(self, urn: str) -> list[Entry]:
        """Every resource of the state that depends on `urn`, directly or not, in dependency order."""
        found: dict[str, Entry] = {}
        frontier = [urn]
        while frontier:
            u = frontier.pop()
            for e in self.state.entries.values():
                if u in e.deps and e.urn not in found:
                    found[e.urn] = e
                    frontier.append(e.urn)
        return _dependency_order(list(found.values()))

    def _updatable(self, typ: str, old: Entry, new: dict[str, Any], replace_on: list[str]) -> bool:
        """The engine's plan: the provider's diff (schema.py: ForceNew replaces, the rest is an
        update, applied or ignored as the provider does), then the registration's
        replaceOnChanges (a Command's `triggers[*]`, which its SDK adds)."""
        if typ in schema.PLANNED:
            return schema.plan(typ, old.inputs, new, replace_on) == "update"
        return False

    def _libvirt(self, provider: str) -> Libvirt:
        try:
            return self.providers[provider]
        except KeyError:
            raise EngineError(f"no libvirt provider {provider} registered") from None

    def _create(self, typ: str, name: str, provider: str, inputs: dict[str, Any]) -> Outcome:
        if typ in LIBVIRT_TYPES:
            return getattr(self._libvirt(provider), LIBVIRT_TYPES[typ][0])(inputs)
        if typ == COMMAND:
            r = command.run(inputs, self.wrap_net, log=lambda m: self.say(f"    {name}: {m}"))
            return Outcome(f"{name}-{uuid.uuid4().hex[:8]}", {**inputs, "stdout": r.stdout, "stderr": r.stderr})
        if typ == LOCAL_COMMAND:  # on the machine running the program: this one
            r = command.run_local(inputs)
            return Outcome(f"{name}-{uuid.uuid4().hex[:8]}", {**inputs, "stdout": r.stdout, "stderr": r.stderr})
        if typ == COPY:
            command.copy(inputs, self.wrap_net, log=lambda m: self.say(f"    {name}: {m}"))
            return Outcome(uuid.uuid4().hex[:16], dict(inputs))
        if typ == TLS_KEY:
            return Outcome(str(uuid.uuid4()), {**inputs, **generate_ed25519()})
        raise EngineError(f"the VM lab does not know how to create a {typ}")

    def _update(self, typ: str, provider: str, old: Entry, inputs: dict[str, Any]) -> Outcome:
        for path in sorted(schema.ignored(typ, old.inputs, inputs)):
            self.say(f"    {old.urn.rsplit('::', 1)[-1]}: {path} changed: the provider ignores it")
        if typ == schema.NETWORK:
            return self._libvirt(provider).update_network(old.id, old.inputs, inputs)
        if typ == "libvirt:index/domain:Domain":
            out = self._libvirt(provider).update_domain(old.id, old.inputs, inputs)
            if out is None:
                raise EngineError(f"{old.urn}: no in-place update for this change")
            return out
        if typ in (COMMAND, LOCAL_COMMAND):  # `create` runs again, same ID (commandController.go Update)
            ran = self._create(typ, old.urn.rsplit("::", 1)[-1], provider, inputs)
            return Outcome(old.id, ran.outputs)
        if typ == COPY:  # copies again only for a new source or place (copyController.go Update)
            if (old.inputs["source"]["hash"], old.inputs["remotePath"]) != (
                inputs["source"]["hash"],
                inputs["remotePath"],
            ):
                self._create(typ, old.urn.rsplit("::", 1)[-1], provider, inputs)
            return Outcome(old.id, dict(inputs))
        raise EngineError(f"the VM lab does not know how to update a {typ}")

    def _delete(self, entry: Entry | None, forget: bool = True) -> None:
        """Deletes the resource; `forget`: and its entry (not for an old self replaced by a new
        one under the same URN)."""
        if entry is None:
            return
        if entry.type in LIBVIRT_TYPES:
            lv = self.providers.get(entry.provider) or Libvirt("qemu:///system", self.run_on_hypervisor)
            getattr(lv, LIBVIRT_TYPES[entry.type][1])(entry.id)
        if entry.type == COMMAND and entry.inputs.get("delete"):
            name = entry.urn.rsplit("::", 1)[-1]
            r = command.run(entry.inputs, self.wrap_net, log=lambda m: self.say(f"    {name}: {m}"), script="delete")
            for line in (r.stdout + r.stderr).splitlines():
                self.say(f"    {name} (delete): {line}")
        if forget:
            with self.state.lock:
                self.state.entries.pop(entry.urn, None)
                self.state.save()

    # -- before and after the program -----------------------------------------------------------
    def refresh(self) -> list[str]:
        """Drops the libvirt resources of the state that are gone (`pulumi up --refresh`)."""
        gone = []
        lv = Libvirt("qemu:///system", self.run_on_hypervisor)
        for e in list(self.state.entries.values()):
            if e.type in LIBVIRT_TYPES and not getattr(lv, LIBVIRT_TYPES[e.type][2])(e.id):
                gone.append(e.urn)
                self.state.entries.pop(e.urn)
        self.state.save()
        return gone

    def delete_unregistered(self) -> list[str]:
        """The end of an update (the engine's ScheduleDeletes): the old selves of resources
        replaced create-first, and what the state holds that the program no longer registers,
        dependents first."""
        stale = [e for e in self.state.entries.values() if e.urn not in self.registered]
        order = list(reversed(_dependency_order(self.condemned + stale)))
        for e in order:
            old_self = any(e is c for c in self.condemned)
            self.say(f"  - {e.urn.rsplit('::', 1)[-1]}: delete{' (replaced)' if old_self else ''}")
            self._delete(e, forget=not old_self)
        self.condemned = []
        return [e.urn for e in order]

    def destroy(self) -> list[str]:
        """`pulumi destroy`: every resource of the state, dependents first, delete scripts run."""
        self.registered = set()
        return self.delete_unregistered()

    def order_violations(self) -> list[str]:
        """Every resource started after all it depends on had finished (data links and
        `depends_on`, as recorded at registration): the pairs where not."""
        bad = []
        for r in self.regs:
            mine = self.events.get(r.urn)
            for d in r.deps:
                theirs = self.events.get(d)
                if mine and theirs and theirs.ended > mine.started:
                    bad.append(f"{r.name} started before {d.rsplit('::', 1)[-1]} finished")
        return bad

    def actions(self) -> dict[str, str]:
        """What was done to each resource, by name: create, update, replace or same."""
        names = {r.urn: r.name for r in self.regs}
        return {names[u]: e.action for u, e in self.events.items()}


UNKNOWN = object()  # an input the engine does not know yet: it differs from any value


def ignoring(paths: list[str], old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The new inputs with each ignored input's old value, as the engine sets them before it
    diffs, so for an update and a replacement alike (step_generator.go 1264-1268, and
    processIgnoreChanges at 3074, v3.259.0). Top-level inputs only: the program ignores no
    nested one."""
    if any(not p.isidentifier() for p in paths):
        raise EngineError(f"the VM lab ignores top-level inputs only, not {paths}")
    return {**new, **{p: old[p] for p in paths if p in old}}


def _dependency_order(entries: list[Entry]) -> list[Entry]:
    """`entries` with each after those of them it depends on (a cycle, which the engine never
    records, is broken in state order)."""
    left = {e.urn: e for e in entries}
    order: list[Entry] = []
    while left:
        ready = [e for e in left.values() if not any(d in left and d != e.urn for d in e.deps)]
        for e in ready or list(left.values())[:1]:
            order.append(left.pop(e.urn))
    return order


def generate_ed25519() -> dict[str, str]:
    """A real ED25519 key pair, as tls.PrivateKey's outputs name it."""
    with tempfile.TemporaryDirectory(prefix="halab-key-") as d:
        key = Path(d) / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "halab", "-f", str(key)], check=True)
        return {
            "privateKeyOpenssh": key.read_text(),
            "publicKeyOpenssh": (Path(d) / "id.pub").read_text(),
        }
