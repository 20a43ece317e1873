"""The Pulumi program run in this process, without the engine, on Pulumi's mock runtime: what
the VM lab realises (its engine creates each registration for real), what the benchmark times
and what the tests assert on. A recording monitor keeps every registration (type, name, parent,
dependencies, which inputs are secret); the mocks echo inputs back as outputs, as the engine
would, and make up the few outputs the program reads (the generated SSH key)."""

from __future__ import annotations

import gc
import hashlib
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config

PROGRAM = Path(__file__).resolve().parents[2] / "__main__.py"

SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig


@dataclass
class Reg:
    urn: str
    type: str
    name: str
    parent: str
    deps: list[str]
    inputs: dict[str, Any]
    secret_inputs: set[str]
    provider: str
    replace_on_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    property_deps: dict[str, list[str]] = field(default_factory=dict)
    """By input: the resources its value came from (the engine's PropertyDependencies)."""
    ignore_changes: list[str] = field(default_factory=list)


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def _has_secret(value: Any) -> bool:
    if _is_secret(value):
        return True
    if isinstance(value, dict):
        return any(_has_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secret(v) for v in value)
    return False


# The engine's asset in a state file (apitype/resource.AssetSig): what a FileAsset input becomes.
ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"


def stored_asset(asset: pulumi.FileAsset) -> dict[str, str]:
    """A file asset as the engine keeps it: its path and the sha256 of its bytes, which the
    engine reads from the file when the resource registers (resource/asset.go EnsureHash)."""
    path = str(asset.path)
    return {SECRET_SIG: ASSET_SIG, "hash": hashlib.sha256(Path(path).read_bytes()).hexdigest(), "path": path}


def _plain(value: Any) -> Any:
    """Inputs with the secret wrappers removed, file assets as the engine stores them."""
    if isinstance(value, pulumi.FileAsset):
        return stored_asset(value)
    if _is_secret(value):
        return _plain(value["value"])
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def registration(urn: str, request) -> Reg:
    """What the program asked of the engine for one resource (a RegisterResourceRequest)."""
    inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
    deps = set(request.dependencies)
    for pd in request.propertyDependencies.values():
        deps |= set(pd.urns)
    return Reg(
        urn=urn,
        type=request.type,
        name=request.name,
        parent=request.parent,
        deps=sorted(deps),
        inputs=_plain(inputs),
        secret_inputs={k for k, v in inputs.items() if _has_secret(v)},
        provider=request.provider,
        replace_on_changes=list(request.replaceOnChanges),
        delete_before_replace=bool(request.deleteBeforeReplace),
        property_deps={k: sorted(pd.urns) for k, pd in request.propertyDependencies.items() if pd.urns},
        ignore_changes=list(request.ignoreChanges),
    )


STACK_REFERENCE = "pulumi:pulumi:StackReference"


class Mocks(pulumi.runtime.Mocks):
    def __init__(self, previous: dict[str, Any] | None = None):
        self.previous = previous or {}
        """The stack's outputs from its last `up`, as a StackReference to itself reads them."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == STACK_REFERENCE:
            return args.name, {**state, "outputs": dict(self.previous), "secretOutputNames": []}
        if args.typ == "tls:index/privateKey:PrivateKey":
            state["public_key_openssh"] = "ssh-ed25519 AAAAmockpublic halab"
            state["private_key_openssh"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class PreviewMocks(Mocks):
    """`pulumi preview`, as the engine answers a resource it has yet to create: no ID, and of
    its outputs only what the program gave as inputs; the rest (the generated key, the IDs
    every step's trigger holds) is unknown to the program, which must build its graph anyway."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == STACK_REFERENCE:  # read in a preview too (the builtin provider's Read)
            return super().new_resource(args)
        return "", dict(args.inputs)


class Recorder(pmocks.MockMonitor):
    def __init__(self, m):
        super().__init__(m)
        self.regs: list[Reg] = []

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.regs.append(registration(resp.urn, request))
        return resp


@dataclass
class Program:
    regs: list[Reg]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)  # the stack outputs kept secret

    def of_type(self, typ: str) -> list[Reg]:
        return [r for r in self.regs if r.type == typ]

    def by_name(self, name: str) -> Reg:
        (r,) = [r for r in self.regs if r.name == name]
        return r


def run_program(
    cfg: dict[str, str],
    secret_keys: list[str],
    recorder: Recorder | None = None,
    preview: bool = False,
    previous: dict[str, Any] | None = None,
) -> Program:
    """The program run once, as `pulumi up` runs it, or as `pulumi preview` does (`preview`);
    on a stack whose last `up` exported `previous` (None: never deployed)."""
    mocks = PreviewMocks(previous) if preview else Mocks(previous)
    recorder = recorder or Recorder(mocks)
    pulumi.runtime.set_mocks(
        mocks, project="ha-lb-lab", stack="test", preview=preview, monitor=recorder, organization="organization"
    )
    set_all_config(cfg, secret_keys)
    exported: dict[str, Any] = {}
    real_export = pulumi.export

    def capture(name: str, value: Any) -> None:
        exported[name] = value

    @pulumi.runtime.test
    def program():
        pulumi.export = capture
        try:
            runpy.run_path(str(PROGRAM), run_name="__main__")
        finally:
            pulumi.export = real_export
        values = {k: pulumi.Output.from_input(v) for k, v in exported.items()}
        flags = {k: pulumi.Output.from_input(o.is_secret()) for k, o in values.items()}
        return pulumi.Output.all(pulumi.Output.all(**values), pulumi.Output.all(**flags)).apply(keep)

    def keep(results: list[dict[str, Any]]) -> None:
        values, flags = results
        exported.update(values)
        secret.update(k for k, is_secret in flags.items() if is_secret)

    secret: set[str] = set()
    collecting = gc.isenabled()  # the program turns the collector off: this process goes on
    try:
        program()
    finally:
        if collecting:
            gc.enable()
    return Program(recorder.regs, exported, secret)
