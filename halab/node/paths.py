"""The node paths, read from their one declaration (halab/node/steps/paths.sh), which the steps
source as it is (lib.sh does). `PATHS["HAPROXY_CFG"]` in Python; `fill` puts them into a node
file's `@NAME@`s."""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

DECLARATION = Path(__file__).resolve().parent / "steps" / "paths.sh"
_LINE = re.compile(r"([A-Z][A-Z0-9_]*)=(/[A-Za-z0-9_./-]+)")
_SLOT = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def _read() -> dict[str, str]:
    """Every NAME=/path line; anything else but a comment or a blank line is refused, so that
    bash and Python never read the file differently."""
    found: dict[str, str] = {}
    for n, line in enumerate(DECLARATION.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        if not m:
            raise ValueError(f"{DECLARATION}:{n}: not NAME=/absolute/path: {line!r}")
        if m[1] in found or m[2] in found.values():
            raise ValueError(f"{DECLARATION}:{n}: {line!r} declared twice")
        found[m[1]] = m[2]
    return found


PATHS = MappingProxyType(_read())


def fill(text: str, where: str) -> str:
    """`text` with each `@NAME@` replaced by its path; a name not declared fails, naming it."""

    def one(m: re.Match[str]) -> str:
        if m[1] not in PATHS:
            raise KeyError(f"{where}: @{m[1]}@ is not declared in {DECLARATION.name}")
        return PATHS[m[1]]

    return _SLOT.sub(one, text)
