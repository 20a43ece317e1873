"""The Pulumi state the program makes, estimated under mocks: the inputs and the outputs the
engine would store for each resource it registers.

Every step's bundle is a Command's `stdin`, kept in the state twice (an input, and an output
the provider echoes): the state grows with what the bundles carry, and every `pulumi up` reads
and writes it whole. Under the mocks a resource's outputs are its inputs echoed back, as a
Command's are; the provider's own outputs (a Command's stdout and stderr) are not known here and
not counted, nor are each resource's URN, parent and dependencies. A secret is counted as the
engine stores it: its value's JSON encrypted (a 12-byte nonce, a 16-byte tag) and base64-encoded,
in the engine's secret wrapper. Compact JSON: a pretty-printed state file adds its indentation.
Each node's library is not in it: a file asset, copied to the node, of which the state keeps the
path and the hash; its bytes are counted apart, as what every `up` copies to a new guest.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc

from halab.drivers.program_runtime import ASSET_SIG, SECRET_SIG, SECRET_VALUE, Mocks, run_program, stored_asset

# The engine's secret wrapper in a state file (apitype.SecretSig / apitype.SecretValue).
STATE_SECRET_SIG = "4dabf18193072939515e22adb298388d"
STATE_SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def stored(value: Any) -> Any:
    """A deserialized input as the state holds it: each secret replaced by a ciphertext of its
    size ("v1:" nonce ":" sealed JSON, as the passphrase secrets manager writes it)."""
    if isinstance(value, pulumi.FileAsset):
        return stored_asset(value)
    if isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE:
        plain = json.dumps(value.get("value"), separators=(",", ":"), default=str).encode()
        sealed = base64.b64encode(bytes(12)).decode() + ":" + base64.b64encode(plain + bytes(16)).decode()
        return {STATE_SECRET_SIG: STATE_SECRET_VALUE, "ciphertext": "v1:" + sealed}
    if isinstance(value, dict):
        return {k: stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(v) for v in value]
    return value


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


@dataclass
class StateSize:
    resources: int = 0
    total: int = 0  # bytes: every resource's inputs and outputs
    bundles: int = 0  # of which the step bundles (each Command's stdin, input and output)
    copied: int = 0  # not in the state: the files copied to the nodes (each node's library)


class StateRecorder(pmocks.MockMonitor):
    """A mock monitor that sizes each registered resource's inputs and outputs as it goes,
    keeping nothing else (100 backends register over a thousand resources). The SDK calls it
    from its thread pool, several resources at once: the sums are taken under a lock (without
    it, `+=` lost updates and the figures moved from run to run)."""

    def __init__(self, mocks: pmocks.Mocks):
        super().__init__(mocks)
        self.regs: list = []  # what run_program reads: nothing kept
        self.size = StateSize()
        self._lock = threading.Lock()

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return resp
        inputs = stored(rpc.deserialize_properties(request.object, keep_unknowns=True))
        total = 2 * _size(inputs)  # the outputs: the inputs echoed
        bundles = 2 * _size(inputs["stdin"]) if "stdin" in inputs else 0
        source = inputs.get("source")
        copied = (
            os.path.getsize(source["path"]) if isinstance(source, dict) and source.get(SECRET_SIG) == ASSET_SIG else 0
        )
        with self._lock:
            s = self.size
            s.resources += 1
            s.total += total
            s.bundles += bundles
            s.copied += copied
        return resp


def state_size(cfg: dict[str, str], secret_keys: list[str]) -> StateSize:
    """The program run once under mocks (as `pulumi up` runs it), its state sized."""
    recorder = StateRecorder(Mocks())
    run_program(cfg, secret_keys, recorder)
    return recorder.size
