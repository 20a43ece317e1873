"""The forms a stack config arrives in: a stack file (Pulumi.<stack>.yaml) read by the scripts
that run without the Pulumi engine (render, netns-lab, vm-lab, bench), the engine's key-value
pairs, and the CLI's JSON. Every way a stack file can be unusable is one line naming the file
(and the line and column where the YAML broke): no script shows a traceback for it. (`pulumi up`
never reads the file here: the engine does, and hands the program its keys.)"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from halab.core.config_rules import NS, SECRET_KEYS, ConfigError


class Secure:
    """Marks a config value that the stack file holds encrypted (`secure:`)."""

    def __repr__(self) -> str:
        return "<secret>"


def is_secure(value: Any) -> bool:
    return isinstance(value, Secure) or (isinstance(value, Mapping) and set(value) == {"secure"})


def from_pulumi(entries: Iterable[tuple[str, Any, bool]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The `parse` inputs from config as Pulumi hands it over, (key, value, is_secret) triples:
    the engine's in the program, `pulumi config --json --show-secrets` in the verifier. Returns
    (every `halab:` key, secret ones masked) and (the secret values). Structured values come as
    JSON text."""
    raw: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key, value, secret in entries:
        ns, _, name = key.partition(":")
        if ns != NS:
            continue
        if name in SECRET_KEYS and secret:
            raw[key] = Secure()
            secrets[name] = str(value)
        elif isinstance(value, str) and value[:1] in ("{", "["):
            try:
                raw[key] = json.loads(value)
            except ValueError:
                raw[key] = value
        else:
            raw[key] = value
    return raw, secrets


def engine_form(raw: Mapping[str, Any], secrets: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """A stack file's keys as the Pulumi engine hands them to a program (objects as JSON text),
    the given secrets (`halab:` keys without the prefix) added; and which keys are secret."""
    cfg = {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    cfg.update({f"{NS}:{k}": v for k, v in secrets.items()})
    return cfg, [f"{NS}:{k}" for k in secrets]


class StackFileError(ConfigError):
    """The stack file itself cannot be used: one line, the file named first."""

    def __init__(self, where: str, problem: str):
        self.line = f"{where}: {problem}"
        super().__init__([self.line])

    def __str__(self) -> str:
        return self.line


def load_stack_file(path: str) -> dict[str, Any]:
    """The `config:` mapping of a Pulumi.<stack>.yaml (encrypted values stay `{secure: ...}`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise StackFileError(path, "no such file") from None
    except IsADirectoryError:
        raise StackFileError(path, "is a directory, not a stack file") from None
    except PermissionError:
        raise StackFileError(path, "cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        raise StackFileError(path, f"is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise StackFileError(path, f"cannot be read ({e.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark, ctx = e.problem_mark or e.context_mark, e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        why = f"not valid YAML: {e.problem or e.context}"
        if e.context and ctx is not None and ctx is not mark:  # where the broken construct began
            why += f" ({e.context} from line {ctx.line + 1}, column {ctx.column + 1})"
        raise StackFileError(where, why) from None
    except yaml.YAMLError as e:
        raise StackFileError(path, f"not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise StackFileError(path, f"the top level is a {_kind(doc)}; a stack file is a mapping (config: ...)")
    cfg = doc.get("config")
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise StackFileError(path, f"config: is a {_kind(cfg)}; it must be a mapping of {NS}:<key>: <value>")
    if cfg and not any(str(k).startswith(f"{NS}:") for k in cfg):
        found = ", ".join(sorted(map(str, cfg))[:4])
        why = f"config: has no {NS}: keys (found {found}); this project reads {NS}:<key>, e.g. {NS}:vip"
        raise StackFileError(path, why)
    return cfg


def _kind(value: Any) -> str:
    kinds = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(value), type(value).__name__)
